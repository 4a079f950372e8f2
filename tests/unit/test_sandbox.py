"""The Python checker sandbox: results come back, and every failure becomes a checker error (escape attempts:
tests/reliability/test_sandbox_escapes.py)."""

from __future__ import annotations

import copy
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from eigenloop.checkers.sandbox import CheckerOutcome, SandboxLimits, run_python_checker

FAST = SandboxLimits(timeout_s=2.0, cpu_s=2)
STATE: dict[str, Any] = {"db": {"orders": {"O1": {"status": "cancelled", "items": [1, 2]}}}, "n": 3}
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "Cancel order O1"},
    {"role": "assistant", "content": "Order O1 is cancelled."},
]


def run(source: str, limits: SandboxLimits = FAST, state: dict[str, Any] | None = None) -> CheckerOutcome:
    return run_python_checker(textwrap.dedent(source), STATE if state is None else state, MESSAGES, limits)


def failed(outcome: CheckerOutcome, expected: str) -> None:
    assert outcome.value is None, outcome
    assert outcome.error is not None and expected in outcome.error, outcome


def test_passing_checker_reads_state_and_messages() -> None:
    outcome = run(
        """
        from __future__ import annotations
        import json, re
        from typing import Any

        def check(state: dict[str, Any], messages: list[dict[str, Any]]) -> float:
            print("debug output is allowed")  # goes to stderr, within the output limit
            cancelled = state["db"]["orders"]["O1"]["status"] == "cancelled"
            told = any(re.search(r"cancelled", m["content"]) for m in messages if m["role"] == "assistant")
            return (cancelled + told) / 2 if json.dumps(state) else 0.0
        """
    )
    assert outcome == CheckerOutcome(1.0, None)


@pytest.mark.parametrize(("returned", "value"), [("0.25", 0.25), ("0", 0.0), ("True", 1.0), ("1", 1.0)])
def test_numbers_in_range_pass(returned: str, value: float) -> None:
    assert run(f"def check(state, messages):\n    return {returned}\n") == CheckerOutcome(value, None)


def test_checker_cannot_modify_the_callers_state() -> None:
    state = copy.deepcopy(STATE)
    outcome = run(
        """
        def check(state, messages):
            state["db"]["orders"]["O1"]["status"] = "hacked"
            state.clear()
            messages.append({"role": "assistant", "content": "injected"})
            return 1.0
        """,
        state=state,
    )
    assert outcome == CheckerOutcome(1.0, None)
    assert state == STATE
    assert len(MESSAGES) == 2


def test_working_directory_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run("def check(s, m): return 1.0").value == 1.0
    failed(run("def check(s, m):\n    while True: pass", SandboxLimits(timeout_s=0.5)), "timeout after 0.5s")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def check(s, m)\n    return 1.0", "syntax error: expected ':' (line 1)"),
        ("x = 1", "the source defines no check(state, messages) function"),
        ("check = 0.5", "the source defines no check(state, messages) function"),
        ("raise RuntimeError('at import')", "checker source raised RuntimeError: at import"),
        ("import numpy", "checker source raised ImportError: blocked: import numpy"),
        ("def check(s, m): raise ValueError('bad state')", "check() raised ValueError: bad state"),
        ("def check(s, m): return s['missing']", "check() raised KeyError: 'missing'"),
        ("def check(s, m): return check(s, m)", "check() raised RecursionError"),
        ("import sys\ndef check(s, m): sys.exit(0)", "check() raised SystemExit"),
        ("def check(s, m): return 'yes'", "returned 'yes', not a number in [0, 1]"),
        ("def check(s, m): return 1.5", "returned 1.5, not a number in [0, 1]"),
        ("def check(s, m): return -0.1", "returned -0.1, not a number in [0, 1]"),
        ("def check(s, m): return float('nan')", "returned nan, not a number in [0, 1]"),
        ("def check(s, m): return float('inf')", "returned inf, not a number in [0, 1]"),
        ("def check(s, m): return None", "returned None, not a number in [0, 1]"),
        ("def check(s, m): return 10**5000", "returned a huge int, not a number in [0, 1]"),
        ("def check(s, m): return [1.0]", "returned a list, not a number in [0, 1]"),
        ("def check(s, m): return object()", "returned a object, not a number in [0, 1]"),
    ],
)
def test_checker_failures(source: str, expected: str) -> None:
    failed(run(source), expected)


def test_unserializable_input() -> None:
    failed(run("def check(s, m): return 1.0", state={"x": object()}), "JSON-serializable")


def test_invalid_limits() -> None:
    failed(run("def check(s, m): return 1.0", SandboxLimits(timeout_s=0.0)), "invalid sandbox limits")


def test_concurrent_runs_do_not_mix() -> None:
    source = "def check(state, messages):\n    return state['i'] / 16"
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: run(source, state={"i": i}), range(16)))
    assert outcomes == [CheckerOutcome(i / 16, None) for i in range(16)]


def test_runs_are_deterministic() -> None:
    # Set iteration order of strings depends on the hash seed, which the sandbox fixes.
    source = """
    def check(state, messages):
        order = list({"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"})
        return (hash("eigenloop") % 1000 + order.index("theta")) / 1010
    """
    outcomes = {run(source) for _ in range(20)}
    assert len(outcomes) == 1
    (outcome,) = outcomes
    assert outcome.value is not None and 0.0 <= outcome.value <= 1.0
