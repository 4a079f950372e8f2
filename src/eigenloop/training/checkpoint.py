"""Checkpoints: model (safetensors, loadable as a transformers model), optimizer, scheduler, RNG and data cursor.

A checkpoint is a folder `step-000042` that appears whole or not at all (eigenloop.data.atomic_directory: written
into a hidden temporary folder, fsynced, renamed into place). Only the last `keep_last` are kept. A folder without
`trainer_state.json` is never one, and the hidden leftovers of a save killed mid-write are removed by the next save.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eigenloop.data import atomic_directory, remove_partial_writes

STATE_FILE = "trainer_state.json"
_PREFIX = "step-"


@dataclass(frozen=True)
class TrainerState:
    step: int
    policy_version: int
    cursor: dict[str, Any]
    metrics: dict[str, float]


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])


def step_dir(root: Path, step: int) -> Path:
    return root / f"{_PREFIX}{step:06d}"


def save(
    root: Path,
    state: TrainerState,
    *,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    keep_last: int,
) -> Path:
    """Write checkpoint `state.step` atomically under `root`, then delete all but the newest `keep_last`."""
    # Temp folders of saves killed mid-write, whatever their step: this process is the run's only writer.
    remove_partial_writes(root, f".{_PREFIX}*")
    with atomic_directory(step_dir(root, state.step)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        state_json = {
            "step": state.step,
            "policy_version": state.policy_version,
            "cursor": state.cursor,
            "metrics": state.metrics,
        }
        (tmp / STATE_FILE).write_text(json.dumps(state_json, indent=1))
    for old in checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return step_dir(root, state.step)


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{_PREFIX}*") if p.is_dir() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def latest(root: Path) -> Path | None:
    found = checkpoints(root)
    return found[-1] if found else None


def read_state(path: Path) -> TrainerState:
    raw = json.loads((path / STATE_FILE).read_text())
    return TrainerState(
        step=int(raw["step"]),
        policy_version=int(raw["policy_version"]),
        cursor=dict(raw["cursor"]),
        metrics=dict(raw.get("metrics", {})),
    )


def load_training_state(path: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> TrainerState:
    """Restore optimizer, scheduler and RNG from checkpoint `path` (the model is loaded from it separately)."""
    blob = torch.load(path / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return read_state(path)
