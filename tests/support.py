"""Test helpers: real service processes on loopback ports, and scraping their /metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from eigenloop.launcher import HOST, free_port, health

REPO = Path(__file__).resolve().parents[1]
# The torch device of the model-serving and training tests (the inference service's --device, the trainer's
# model.device). CI runs them on cpu; on a GPU machine `EIGENLOOP_TEST_DEVICE=cuda pytest ...` runs the same tests
# on CUDA.
TEST_DEVICE = os.environ.get("EIGENLOOP_TEST_DEVICE", "cpu")


class ServiceProcess:
    """A service started as its own process, waited on until SERVING; stopped with SIGTERM on exit."""

    def __init__(
        self,
        module: str,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        start_timeout_s: float = 120.0,  # torch-based services take a minute to import on a busy 2-core machine
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.log = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"svc-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            module,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            *args,
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + start_timeout_s
        while health(self.address, timeout_s=0.5) != "SERVING":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{module} did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> int:
        self.terminate()
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate: object, timeout_s: float = 10.0, interval_s: float = 0.05) -> bool:
    """Poll `predicate()` until it is truthy or the time is up; tests assert on the returned value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval_s)
    return False
