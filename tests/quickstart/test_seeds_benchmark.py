"""benchmarks/quickstart_seeds.py: a fresh folder gets a fresh run (the quickstart refuses `--resume` of nothing),
a folder holding a run begun before is resumed; what the run wrote is collected with its kinds of mistake."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import quickstart_seeds
from eigenloop.quickstart.config import QuickstartConfig, write_config


def _finish(out: Path) -> None:
    """What a finished quickstart leaves behind, as far as the benchmark reads it."""
    out.mkdir(exist_ok=True)
    write_config(QuickstartConfig.preset(fast=True, seed=0, domain="toy"), out / "config.yaml")
    model = {"greedy_pass1": 50.0, "sampled_pass1": 25.0, "pass_hat_k": 10.0, "by_goal": {}, "sampled_failures": {}}
    failed = {"greedy_failures": {"cancel_order: wrong reason": 2, "get_order: wrong order_id": 1}}
    (out / "eval").mkdir(parents=True)
    (out / "eval" / "results.json").write_text(json.dumps({"sft": model | failed, "grpo": model | failed}))
    (out / "stages.json").write_text(json.dumps({"sft": {"seconds": 1.0}}))


@pytest.mark.parametrize("begun", [False, True])
def test_a_run_is_resumed_only_when_one_was_begun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, begun: bool) -> None:
    out = tmp_path / "seed-0"
    if begun:
        out.mkdir()
        write_config(QuickstartConfig.preset(fast=True, seed=0, domain="toy"), out / "config.yaml")
    commands: list[list[str]] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        commands.append(command)
        _finish(out)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(quickstart_seeds.subprocess, "run", run)
    result = quickstart_seeds.run_seed(0, out)
    assert ("--resume" in commands[0]) is begun
    assert result["sft"]["greedy_pass1"] == 50.0
    assert result["mistakes"]["sft"]["greedy"] == {"wrong value": 1, "wrong choice": 2}
