"""Run every installed service as a local process on loopback: `eigenloop up`, `status`, `down`.

Services are found through the `eigenloop.services` entry point group (each service's pyproject registers
its server module), so a service added later joins `up` without a change here. Each replica gets its own
gRPC and metrics ports; ports, pids and log paths are written to <run dir>/run.json. Every process is told
where every service is through EIGENLOOP_ADDRESSES_<NAME> (comma-separated host:port list).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE_GROUP = "eigenloop.services"
HOST = "127.0.0.1"
DEFAULT_RUN_DIR = Path(".eigenloop") / "run"


class LauncherError(RuntimeError):
    pass


@dataclass
class Replica:
    service: str
    index: int
    pid: int
    port: int
    metrics_port: int
    log: str

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"


def installed_services() -> dict[str, str]:
    """{service name: server module} for every installed service."""
    return {ep.name: ep.value for ep in entry_points(group=SERVICE_GROUP)}


def missing_settings(module: str) -> list[str]:
    """Environment variables a service's package lists in REQUIRED_SETTINGS that are not set.

    Only the package's __init__ is imported (not its server, which may pull in torch), so this is cheap.
    """
    package = importlib.import_module(module.partition(".")[0])
    required: tuple[str, ...] = getattr(package, "REQUIRED_SETTINGS", ())
    return [name for name in required if not os.environ.get(name)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def address_env_var(service: str) -> str:
    return f"EIGENLOOP_ADDRESSES_{service.upper()}"


def state_file(run_dir: Path) -> Path:
    return run_dir / "run.json"


def read_state(run_dir: Path) -> list[Replica]:
    path = state_file(run_dir)
    if not path.exists():
        return []
    try:
        return [Replica(**r) for r in json.loads(path.read_text())["replicas"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise LauncherError(f"{path} is damaged ({exc}); stop stray processes by hand and delete it") from None


def write_state(run_dir: Path, replicas: Sequence[Replica]) -> None:
    path = state_file(run_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"replicas": [asdict(r) for r in replicas]}, indent=2))
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): reap it if it is our child, else ask /proc (Linux) for its state.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def health(address: str, timeout_s: float = 1.0) -> str:
    """The replica's gRPC health status name, or UNREACHABLE."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def up(
    run_dir: Path = DEFAULT_RUN_DIR,
    only: Sequence[str] = (),
    replicas: dict[str, int] | None = None,
    timeout_s: float = 30.0,
    extra_args: dict[str, list[str]] | None = None,
    skipped: dict[str, list[str]] | None = None,
) -> list[Replica]:
    """Start the services, wait until every replica reports SERVING, and record them in run.json.

    A service whose required settings are missing is left out (and reported in `skipped`), unless it was
    asked for by name with `only`, which is an error then.
    """
    running = [r for r in read_state(run_dir) if pid_alive(r.pid)]
    if running:
        names = ", ".join(r.name for r in running)
        raise LauncherError(f"services already running from {run_dir} ({names}); run `eigenloop down` first")
    services = installed_services()
    unknown = sorted(set(only) - set(services)) + sorted(set(replicas or {}) - set(services))
    if unknown:
        raise LauncherError(
            f"unknown service(s) {', '.join(unknown)}; installed: {', '.join(sorted(services)) or 'none'}"
        )
    chosen = []
    for name in sorted(services):
        if only and name not in only:
            continue
        if missing := missing_settings(services[name]):
            if name in only:
                raise LauncherError(f"{name} needs {', '.join(missing)} set")
            if skipped is not None:
                skipped[name] = missing
            continue
        chosen.append(name)
    if not chosen:
        raise LauncherError("no services installed (pip install -e services/<name>)")
    counts = {name: (replicas or {}).get(name, 1) for name in chosen}
    ports = {name: [(free_port(), free_port()) for _ in range(counts[name])] for name in chosen}
    env = dict(os.environ)
    for name in chosen:
        env[address_env_var(name)] = ",".join(f"{HOST}:{p}" for p, _ in ports[name])
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    started: list[Replica] = []
    for name in chosen:
        for index, (port, metrics_port) in enumerate(ports[name]):
            log_path = run_dir / "logs" / f"{name}-{index}.log"
            cmd = [
                sys.executable,
                "-m",
                services[name],
                "--host",
                HOST,
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
                "--replica-id",
                f"{name}-{index}",
                *(extra_args or {}).get(name, []),
            ]
            with open(log_path, "ab") as log:
                # A session of its own: Ctrl-C in the terminal that ran `up` does not reach the services.
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            started.append(Replica(name, index, proc.pid, port, metrics_port, str(log_path)))
    write_state(run_dir, started)
    try:
        wait_serving(started, timeout_s)
    except LauncherError:
        down(run_dir)
        raise
    return started


def wait_serving(replicas: Sequence[Replica], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(replicas)
    while pending:
        for replica in list(pending):
            if not pid_alive(replica.pid):
                raise LauncherError(f"{replica.name} exited during start-up; last log lines:\n{tail(replica.log)}")
            if health(replica.address, timeout_s=0.5) == "SERVING":
                pending.remove(replica)
        if pending and time.monotonic() > deadline:
            names = ", ".join(r.name for r in pending)
            raise LauncherError(f"{names} not SERVING after {timeout_s:.0f}s; see {pending[0].log}")
        if pending:
            time.sleep(0.1)


def tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def status(run_dir: Path = DEFAULT_RUN_DIR) -> list[tuple[Replica, bool, str]]:
    """Each recorded replica with whether its process lives and what its health check says."""
    result = []
    for replica in read_state(run_dir):
        alive = pid_alive(replica.pid)
        result.append((replica, alive, health(replica.address) if alive else "EXITED"))
    return result


def down(run_dir: Path = DEFAULT_RUN_DIR, timeout_s: float = 20.0) -> list[tuple[Replica, str]]:
    """SIGTERM every replica (they drain), wait, SIGKILL what is left; returns how each one ended."""
    replicas = read_state(run_dir)
    for replica in replicas:
        if pid_alive(replica.pid):
            os.kill(replica.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    outcome: list[tuple[Replica, str]] = []
    for replica in replicas:
        while pid_alive(replica.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(replica.pid):
            os.kill(replica.pid, signal.SIGKILL)
            outcome.append((replica, "killed"))
        else:
            outcome.append((replica, "stopped"))
    state_file(run_dir).unlink(missing_ok=True)
    return outcome


def addresses(service: str, run_dir: Path = DEFAULT_RUN_DIR) -> str | None:
    """Where `service` runs: EIGENLOOP_ADDRESSES_<NAME>, else the live replicas recorded by `up`."""
    if from_env := os.environ.get(address_env_var(service)):
        return from_env
    live = [r.address for r in read_state(run_dir) if r.service == service and pid_alive(r.pid)]
    return ",".join(live) or None
