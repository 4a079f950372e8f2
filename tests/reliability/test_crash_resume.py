"""Long-running jobs SIGKILLed mid-way (real `eigenloop` processes), then resumed: the trainer and synthesis.

Expected: everything left behind reads back whole (checkpoints load: weights, optimizer, trainer state; every
JSONL line parses); `--resume` continues from the last complete checkpoint or round and ends on exactly what a
run that was never killed produces (bit-identical weights; byte-identical synthesis files); metrics.jsonl holds
every step once.

Tried: the trainer killed between two checkpoints (the steps after the last save are lost and trained again);
the trainer killed while a checkpoint folder is being written (a watcher kills it as soon as the hidden
temporary folder appears), again and again until the run finishes; synthesis killed in the middle of its second
and of its third round.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from eigenloop.contracts.v1 import common_pb2 as pb  # noqa: E402
from eigenloop.data import read_jsonl, read_tasks  # noqa: E402
from eigenloop.synthesis.run import complete_rounds  # noqa: E402
from eigenloop.training import checkpoint  # noqa: E402
from tests.reliability.conftest import Trials  # noqa: E402
from tests.training.helpers import sft_config, write_config  # noqa: E402

STEPS = 12
TIMEOUT_S = 120


def _config(tmp: Path, every: int) -> Path:
    raw = sft_config(tmp, steps=STEPS, checkpoint={"every": every, "keep_last": 2}, eval_every=100)
    return write_config(tmp / "sft.yaml", raw)


def _eigenloop(*args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "eigenloop.cli", *args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _train(config: Path, *, resume: bool) -> subprocess.Popen[bytes]:
    return _eigenloop("train", "sft", "--config", str(config), *(["--resume"] if resume else []))


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, err.decode()[-2000:]


def _kill_when(proc: subprocess.Popen[bytes], ready: Any) -> bool:
    """SIGKILL `proc` the moment `ready()` holds; False if the process ended first."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0002)
    proc.kill()
    raise AssertionError("the trainer neither reached the fault point nor finished")


def _weights(run_dir: Path) -> dict[str, Any]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def _assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def _assert_metrics_whole(run_dir: Path) -> None:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]  # raises on a torn line
    assert steps == list(range(1, STEPS + 1))


def _assert_checkpoints_load(root: Path) -> list[int]:
    """Every checkpoint the trainer would resume from loads whole; returns their steps."""
    steps = []
    for path in checkpoint.checkpoints(root):
        AutoModelForCausalLM.from_pretrained(path)
        blob = torch.load(path / "optimizer.pt", weights_only=False)
        assert blob["optimizer"]["state"] and "last_epoch" in blob["scheduler"]
        torch.load(path / "rng.pt", weights_only=False)
        state = checkpoint.read_state(path)
        assert path == checkpoint.step_dir(root, state.step)
        steps.append(state.step)
    return steps


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("straight")
    _finish(_train(_config(tmp, every=3), resume=False))
    return dict(_weights(tmp / "run"))


def test_trainer_killed_mid_step_resumes_exactly(tmp_path: Path, uninterrupted: dict[str, Any], trials: Trials) -> None:
    config, run_dir = _config(tmp_path, every=3), tmp_path / "run"

    def past_a_checkpoint() -> bool:
        metrics = run_dir / "metrics.jsonl"
        return metrics.is_file() and '"step": 4,' in metrics.read_text()  # step 5 is running; step 3 is saved

    assert _kill_when(_train(config, resume=False), past_a_checkpoint)
    saved = _assert_checkpoints_load(run_dir / "checkpoints")
    assert saved and max(saved) < STEPS and not (run_dir / "model").exists()
    _finish(_train(config, resume=True))
    _assert_same_weights(_weights(run_dir), uninterrupted)
    _assert_metrics_whole(run_dir)
    trials.record(
        "faults",
        f"SIGKILL the trainer mid-step (after step 4 of {STEPS}, last checkpoint step {max(saved)}), then --resume",
        "resumed from the last complete checkpoint; final weights bit-identical to an uninterrupted run; "
        "metrics.jsonl has every step once",
    )


def test_trainer_killed_mid_checkpoint_write(tmp_path: Path, uninterrupted: dict[str, Any], trials: Trials) -> None:
    config, root = _config(tmp_path, every=1), tmp_path / "run" / "checkpoints"

    def writing_checkpoint(after: int) -> bool:
        """A save of a step past `after` is under way (its hidden temp folder exists)."""
        try:
            return any(e.name.startswith(".step-") and int(e.name[6:12]) > after for e in os.scandir(root))
        except FileNotFoundError:
            return False

    kills = mid_write = 0
    saved: list[int] = []
    for _ in range(STEPS):
        # Let two saves complete after each restart, kill inside the third: every restart makes progress.
        after = (max(saved) if saved else 0) + 2
        if not _kill_when(_train(config, resume=bool(saved)), functools.partial(writing_checkpoint, after)):
            break  # finished before that save started
        kills += 1
        mid_write += writing_checkpoint(after)  # the temp folder is still there: it died inside the write
        saved = _assert_checkpoints_load(root)
    else:
        _finish(_train(config, resume=True))
    assert kills >= 2 and mid_write >= 1, (kills, mid_write)
    _assert_same_weights(_weights(tmp_path / "run"), uninterrupted)
    _assert_metrics_whole(tmp_path / "run")
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # the last save removed the leftovers
    trials.record(
        "faults",
        f"SIGKILL the trainer while it writes a checkpoint ({kills} kills, {mid_write} inside the write), "
        "--resume after each",
        "every checkpoint left behind loads whole; final weights bit-identical to an uninterrupted run",
    )


SYNTH = ["synth", "--domain", "toy", "--rounds", "3", "--per-round", "40", "--minibatch", "4", "--seed", "5"]


def _synth(out: Path, *, resume: bool) -> subprocess.Popen[bytes]:
    return _eigenloop(*SYNTH, "--embedded", "--out", str(out), *(["--resume"] if resume else []))


def _synth_files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "timings.json"
    }


def test_synthesis_killed_mid_round_resumes_to_the_same_output(tmp_path: Path, trials: Trials) -> None:
    _finish(_synth(tmp_path / "straight", resume=False))
    out = tmp_path / "killed"
    for finished_rounds in ([1], [1, 2]):
        proc = _synth(out, resume=out.exists())
        reached = functools.partial(lambda wanted: complete_rounds(out) == wanted, finished_rounds)
        assert _kill_when(proc, reached), "finished before the kill"
        assert complete_rounds(out) == finished_rounds
        for path in out.rglob("*.jsonl"):  # whatever is there reads back whole
            read_tasks(path) if path.name != "rejected.jsonl" else read_jsonl(path, pb.ValidationReport)
    _finish(_synth(out, resume=True))
    assert _synth_files(out) == _synth_files(tmp_path / "straight")
    trials.record(
        "faults",
        "SIGKILL synthesis in its second round, resume, SIGKILL it in its third, resume",
        "resumed from the last complete round each time; every file byte-identical to an uninterrupted run",
    )
