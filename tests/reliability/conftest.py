"""Records of what the reliability tests tried and what came of it, for docs/reliability.md.

A test takes the `trials` fixture and calls `trials.record(area, tried, outcome)` once per case (a fuzz test
calls it thousands of times; equal records are counted, not repeated). When the environment variable
EIGENLOOP_RELIABILITY_RECORDS names a file, every test's records, with whether the test passed, are merged
into it at the end of the run (keyed by test, so a partial run updates only its own tests);
scripts/reliability_report.py renders that file as the table in docs/reliability.md. Without the variable
nothing is written.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

RECORDS_ENV = "EIGENLOOP_RELIABILITY_RECORDS"
_KEY = pytest.StashKey["Trials"]()
_RESULTS: dict[str, dict[str, Any]] = {}


class Trials:
    """What one test tried: (area, what was tried, outcome observed) → number of cases."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def record(self, area: str, tried: str, outcome: str, cases: int = 1) -> None:
        self.counts[(area, tried, outcome)] += cases


@pytest.fixture()
def trials(request: pytest.FixtureRequest) -> Trials:
    recorded = Trials()
    request.node.stash[_KEY] = recorded
    return recorded


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    recorded = item.stash.get(_KEY, None)
    if recorded is None or (report.when != "call" and report.passed):
        return
    entry = _RESULTS.setdefault(item.nodeid, {"passed": True, "records": []})
    entry["passed"] = entry["passed"] and report.passed
    entry["records"] = [
        {"area": area, "tried": tried, "outcome": observed, "cases": cases}
        for (area, tried, observed), cases in sorted(recorded.counts.items())
    ]


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(RECORDS_ENV)
    if not target or not _RESULTS:
        return
    path = Path(target)
    merged: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(_RESULTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
    tmp.replace(path)
