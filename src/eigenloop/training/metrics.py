"""Training metrics: one JSON line per step in `metrics.jsonl`, and the same values as Prometheus series.

Every scalar becomes a gauge `eigenloop_trainer_<name>` labelled by run; filtered episodes are a counter by reason
and sample staleness (trainer version minus the version a sample came from) a histogram.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from eigenloop.data import atomic_text_file

_NAME = re.compile(r"[^a-zA-Z0-9_]")


FILTERED = Counter(
    "eigenloop_trainer_filtered", "Episodes or groups dropped before training, by reason.", ["run", "reason"]
)
STALENESS = Histogram(
    "eigenloop_trainer_sample_staleness",
    "Policy versions between sampling and training, per trained sample.",
    ["run"],
    buckets=(0, 1, 2, 3, 4, 6, 8, 16),
)
_GAUGES: dict[str, Gauge] = {}
_GAUGES_LOCK = threading.Lock()


def _gauge(key: str) -> Gauge:
    with _GAUGES_LOCK:
        if key not in _GAUGES:
            name = "eigenloop_trainer_" + _NAME.sub("_", key)
            _GAUGES[key] = Gauge(name, f"Training metric {key!r} at the last step.", ["run"])
        return _GAUGES[key]


class Metrics:
    """Where a run's step metrics go. `port` serves /metrics (standalone CLI runs; the service has its own).

    A fresh run starts the file over. A run resumed from the checkpoint of step `resumed_at` keeps the lines up to
    that step only: the steps after it are trained again, and a process killed mid-line left a torn last line.
    """

    def __init__(
        self, path: Path | None, run_id: str, *, port: int | None = None, resumed_at: int | None = None
    ) -> None:
        self.run_id = run_id
        self._file: IO[str] | None = None
        if path is not None:
            kept = _lines_up_to(path, resumed_at) if resumed_at is not None else []
            with atomic_text_file(path) as out:
                out.writelines(kept)
            self._file = path.open("a")
        if port is not None:
            start_http_server(port)

    def log(
        self,
        step: int,
        values: Mapping[str, float],
        *,
        filtered: Mapping[str, int] | None = None,
        staleness: Iterable[int] = (),
    ) -> dict[str, float]:
        """Record one step; returns the line written (values plus filtered_<reason>)."""
        line: dict[str, float] = dict(values)
        for reason, count in (filtered or {}).items():
            line[f"filtered_{reason}"] = count
            if count:
                FILTERED.labels(self.run_id, reason).inc(count)
        for s in staleness:
            STALENESS.labels(self.run_id).observe(s)
        for key, value in line.items():
            if math.isfinite(value):
                _gauge(key).labels(self.run_id).set(value)
        if self._file is not None:
            record = {"step": step, "time": time.time(), **{k: _jsonable(v) for k, v in line.items()}}
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        return line

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _lines_up_to(path: Path, step: int) -> list[str]:
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the torn last line of a killed writer
        if line.endswith("\n") and record.get("step", step + 1) <= step:
            kept.append(line)
    return kept


def _jsonable(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def read_metrics(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
