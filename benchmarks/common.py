"""What every benchmark shares: where results go and how they are written, a process's CPU time, and A/B runs in
interleaved turns."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write benchmarks/results/<name>.json (with the machine it ran on, and its load average at the end: other work
    on the machine slows every timing) and print it."""
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_1_5_15": os.getloadavg()}
    result = {"benchmark": name, **result, "machine": machine}
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Halves:
    """One side of an interleaved comparison: episodes, seconds and CPU seconds per named process, per turn."""

    episodes: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)

    def rate(self) -> float:
        return sum(self.episodes) / sum(self.seconds)

    def rates(self) -> list[float]:
        return [e / s for e, s in zip(self.episodes, self.seconds, strict=True)]


Run = Callable[[int], tuple[int, float]]
"""One turn of a side: given the turn's index, run it and return (episodes, wall seconds)."""


def interleaved(sides: dict[str, tuple[Run, dict[str, int]]], turns: int = 2) -> dict[str, Halves]:
    """Each side (its run and the pids whose CPU it costs) takes `turns` turns, the sides alternating (A, B, A, B):
    a change in machine load falls on every side alike."""
    out = {name: Halves() for name in sides}
    for turn in range(turns):
        for name, (run, pids) in sides.items():
            before = {process: cpu_s(pid) for process, pid in pids.items()}
            episodes, seconds = run(turn)
            side = out[name]
            side.episodes.append(episodes)
            side.seconds.append(seconds)
            for process, pid in pids.items():
                side.cpu_s[process] = side.cpu_s.get(process, 0.0) + cpu_s(pid) - before[process]
    return out
