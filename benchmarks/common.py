"""What every benchmark shares: where results go and how they are written, and a process's CPU time."""

from __future__ import annotations

import json
import os
import platform
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
