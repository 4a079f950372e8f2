"""Named stages that run in order, each finished stage recorded so `--resume` picks up after it.

The record is `<out>/stages.json`, rewritten atomically after every finished stage. A stage that was
interrupted (Ctrl-C, a crash) is not in it, so a resumed run starts that stage again from scratch; a stage
therefore writes its outputs only under its own folder and may be rerun over a partial one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eigenloop.data import write_json_atomic

Summary = dict[str, Any]


class StageError(RuntimeError):
    """A stage failed; the message names the stage and says what went wrong."""


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    run: Callable[[Path], Summary]


@dataclass(frozen=True)
class StageRecord:
    name: str
    seconds: float
    summary: Summary


def finished_stages(out: Path) -> dict[str, StageRecord]:
    path = out / "stages.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {name: StageRecord(name, float(r["seconds"]), dict(r["summary"])) for name, r in raw.items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise StageError(f"{path} is not a stage record ({exc}); delete it or run without --resume") from None


def _save(out: Path, records: Mapping[str, StageRecord]) -> None:
    raw = {name: {"seconds": r.seconds, "summary": r.summary} for name, r in records.items()}
    write_json_atomic(out / "stages.json", raw)


def run_stages(
    stages: Sequence[Stage],
    out: Path,
    *,
    resume: bool,
    on_start: Callable[[Stage, bool], None] = lambda stage, skipped: None,
) -> dict[str, StageRecord]:
    """Run `stages` in order in `out`; with `resume`, skip those already recorded as finished.

    Without `resume`, an existing record is an error rather than silently overwritten: the user either
    resumes or picks another output folder.
    """
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise StageError(f"stage names repeat: {names}")
    records = finished_stages(out)
    if records and not resume:
        raise StageError(f"{out} already holds a run (stages.json): pass --resume to continue it, or another --out")
    unknown = set(records) - set(names)
    if unknown:
        raise StageError(f"{out}/stages.json names stages this pipeline does not have: {sorted(unknown)}")
    for stage in stages:
        if stage.name in records:
            on_start(stage, True)
            continue
        on_start(stage, False)
        started = time.perf_counter()
        summary = stage.run(out / stage.name)
        records[stage.name] = StageRecord(stage.name, round(time.perf_counter() - started, 3), summary)
        _save(out, records)
    return records
