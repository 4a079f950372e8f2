"""Records of what the reliability tests tried and what came of it, for docs/reliability.md; and the inference
server the fuzz and fault tests share.

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

from tests.support import ServiceProcess

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


INFERENCE_CONTEXT = 48  # --max-model-len: keeps every generation short


@pytest.fixture(scope="session")
def inference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One inference process serving a tiny random model (built here), shared by the tests that need it."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.llm_fixtures import build_tiny_chat_model

    model = build_tiny_chat_model(tmp_path_factory.mktemp("tiny-policy"))
    args = ["--model", str(model), "--http-port", "-1", "--max-model-len", str(INFERENCE_CONTEXT)]
    with ServiceProcess("eigenloop_inference.server", [*args, "--batch-window-ms", "1"]) as service:
        yield service
