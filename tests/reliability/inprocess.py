"""A toolenv served in this process through the real runtime (auth, TLS, limits, metrics): cheap to start with
any configuration, and no health probe over plaintext is needed before it can be used (mTLS refuses those)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eigenloop.rpc.server import ServiceRuntime
from eigenloop_toolenv.server import ToolEnvConfig, registrations


@contextmanager
def toolenv_runtime(**settings: Any) -> Iterator[ServiceRuntime]:
    config = ToolEnvConfig(domains=["toy"], grace_period_s=0.0, log_json=False, **settings)
    runtime = ServiceRuntime("toolenv", config, registrations(config))
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.drain()
