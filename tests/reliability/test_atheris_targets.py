"""The atheris targets (tool-call parser, JSON argument validator), driven by hypothesis in the suite and, where
atheris is installed, by a bounded coverage-guided atheris run as well.

Regressions pinned as explicit examples: JSON nested deeper than the recursion limit (a RecursionError escaped
both the parser and toolenv's argument check), and a "\\ud800" escape (the parser returned a call whose
arguments had no UTF-8 form, which then failed to encode into a contract message).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.reliability import atheris_arguments, atheris_tool_calls
from tests.reliability.conftest import Trials
from tests.reliability.fuzzing import fuzz_settings

REPO = Path(__file__).resolve().parents[2]
DEEP = b"[" * 50_000
TARGETS: dict[str, Callable[[bytes], None]] = {
    "tool-call parser": atheris_tool_calls.fuzz_one,
    "JSON argument validator": atheris_arguments.fuzz_one,
}
MODULES = {
    "tool-call parser": "tests.reliability.atheris_tool_calls",
    "JSON argument validator": "tests.reliability.atheris_arguments",
}


@pytest.mark.parametrize("target", list(TARGETS))
def test_target_under_hypothesis(target: str, trials: Trials) -> None:
    fuzz_one = TARGETS[target]

    @fuzz_settings(1500)
    @given(data=st.binary(max_size=400))
    @example(data=b"\x01" + DEEP)  # a block (parser) / an object (validator) holding deep nesting
    @example(data=b"\x02" + DEEP)
    @example(data=b"\x03" + DEEP)
    @example(data=b"\x01\x03" + DEEP)
    @example(data=b'\x02"\\ud800"')
    @example(data=b'\x01{"name": "a", "arguments": {"x": "\\ud800"}}')
    def run(data: bytes) -> None:
        fuzz_one(data)
        trials.record("fuzz: atheris targets", f"{target} (hypothesis)", "no exception, invariants hold")

    run()


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
@pytest.mark.parametrize("target", list(MODULES))
def test_target_under_atheris(target: str, trials: Trials, tmp_path: Path) -> None:
    runs = 10_000
    done = subprocess.run(
        # Crash inputs, if any, land in tmp_path.
        [
            sys.executable,
            "-m",
            MODULES[target],
            f"-runs={runs}",
            "-max_len=256",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    outcome = "no exception, invariants hold" if done.returncode == 0 else f"failed (exit {done.returncode})"
    trials.record("fuzz: atheris targets", f"{target} (atheris, coverage-guided)", outcome, cases=runs)
    assert done.returncode == 0, done.stderr[-3000:]
