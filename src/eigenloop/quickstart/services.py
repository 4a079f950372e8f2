"""The services a stage needs, as local processes on loopback (the launcher), stopped whatever happens.

Settings reach the services as environment variables (how `eigenloop up` configures them too); they are set
only for the launch, so the caller's environment is left as it was. Each service process gets one torch
thread: the trainer in this process uses the rest of the machine's cores.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from eigenloop import launcher


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def running(
    run_dir: Path, settings: Mapping[str, Mapping[str, str]], timeout_s: float = 120.0
) -> Iterator[dict[str, str]]:
    """Start the services named in `settings` ({service: {ENV_VAR: value}}); yield {service: "host:port"}."""
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for values in settings.values():
        env.update(values)
    try:
        with _environment(env):
            replicas = launcher.up(run_dir, only=sorted(settings), timeout_s=timeout_s)
        yield {r.service: r.address for r in replicas}
    finally:
        launcher.down(run_dir, timeout_s=20.0)
