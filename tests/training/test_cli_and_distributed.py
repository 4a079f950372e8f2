from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from eigenloop.cli.main import app
from tests.training.helpers import sft_config, write_config

runner = CliRunner()


def test_cli_trains_sft(tmp_path: Path) -> None:
    config = write_config(tmp_path / "sft.yaml", sft_config(tmp_path, steps=2))
    result = runner.invoke(app, ["train", "sft", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "done: 2 steps" in result.output
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_cli_names_the_bad_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "sft.yaml", {**sft_config(tmp_path), "stepz": 3})
    result = runner.invoke(app, ["train", "sft", "--config", str(config)])
    assert result.exit_code == 2
    assert "stepz: unknown key" in result.output


def test_cli_reports_a_missing_model(tmp_path: Path) -> None:
    raw = {**sft_config(tmp_path), "model": {"path": str(tmp_path / "missing")}}
    result = runner.invoke(app, ["train", "sft", "--config", str(write_config(tmp_path / "c.yaml", raw))])
    assert result.exit_code == 1
    assert "no such directory" in " ".join(result.output.split())  # rich wraps long lines


def _torchrun_matches_single_process(tmp_path: Path, stage: str, raw: dict[str, Any]) -> None:
    single = write_config(tmp_path / "single.yaml", {**raw, "run_dir": str(tmp_path / "single")})
    double = write_config(tmp_path / "double.yaml", {**raw, "run_dir": str(tmp_path / "double")})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = runner.invoke(app, ["train", stage, "--config", str(single)])
    assert result.exit_code == 0, result.output
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    # Its own process group, so a timeout kills the workers too (killing torchrun alone left them orphaned).
    launcher = subprocess.Popen(
        [*torchrun, "eigenloop.cli", "train", stage, "--config", str(double)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 0, stderr[-3000:]
    a = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "double" / "model" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


@pytest.mark.timeout(400)  # two processes start torch; slow on a busy machine
def test_sft_on_two_gloo_processes_matches_one_process(tmp_path: Path) -> None:
    # Dialogues of ~150 tokens in rows of 256: one per row, so each process gets 3 rows, one per micro-batch.
    _torchrun_matches_single_process(tmp_path, "sft", sft_config(tmp_path, steps=3, batch_size=6, micro_batch_rows=1))


@pytest.mark.timeout(400)
def test_grpo_on_two_gloo_processes_matches_one_process(tmp_path: Path, sft_model: Path) -> None:
    from transformers import AutoTokenizer

    from tests.training.helpers import write_tasks, write_trajectories

    write_trajectories(tmp_path / "traj.jsonl", AutoTokenizer.from_pretrained(sft_model))
    raw = {
        "steps": 3,
        "threads": 1,
        "micro_batch_rows": 1,
        "model": {"path": str(sft_model)},
        "data": {"tasks": [str(write_tasks(tmp_path / "tasks.jsonl"))], "max_length": 256},
        "rollouts": {"source": "file", "path": str(tmp_path / "traj.jsonl"), "tasks_per_step": 3},
        "loss": {"sft_weight": 0.1, "kl_coef": 0.05, "sft_batch_size": 2},
        "filter": {"max_staleness": None},
    }
    _torchrun_matches_single_process(tmp_path, "grpo", raw)


def test_cli_trains_grpo_from_a_trajectory_file(tmp_path: Path, sft_model: Path) -> None:
    from transformers import AutoTokenizer

    from tests.training.helpers import write_trajectories

    write_trajectories(tmp_path / "traj.jsonl", AutoTokenizer.from_pretrained(sft_model))
    raw = {
        "run_dir": str(tmp_path / "grpo"),
        "steps": 2,
        "threads": 1,
        "model": {"path": str(sft_model)},
        "rollouts": {"source": "file", "path": "traj.jsonl", "tasks_per_step": 3},
    }
    result = runner.invoke(app, ["train", "grpo", "--config", str(write_config(tmp_path / "grpo.yaml", raw))])
    assert result.exit_code == 0, result.output
    assert "done: 2 steps" in result.output


def test_cli_grpo_embedded_live_rollouts(tmp_path: Path, sft_model: Path) -> None:
    """No inference address: the policy samples from an engine in the trainer's process, kept on the new weights."""
    raw = {
        "run_dir": str(tmp_path / "grpo"),
        "steps": 2,
        "threads": 1,
        "model": {"path": str(sft_model)},
        "data": {"domains": ["toy"], "eval_fraction": 0.0, "system_prompt": "Help.", "tools_in_prompt": False},
        "rollouts": {"tasks_per_step": 2, "group_size": 2, "max_new_tokens": 8, "max_turns": 2},
        "filter": {"zero_variance": False},
    }
    result = runner.invoke(app, ["train", "grpo", "--config", str(write_config(tmp_path / "grpo.yaml", raw))])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [line["episodes"] for line in lines] == [4, 4]
    assert lines[1]["policy_version"] == 1  # the first step produced version 1, pushed into the engine
