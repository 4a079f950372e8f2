"""Server bootstrap shared by every service: config → gRPC server with health, reflection, metrics and drain.

A service supplies its servicers; this module supplies everything else:

    def main(argv=None) -> int:
        return run_service("toolenv", ToolEnvConfig, lambda cfg: [Registration(...)], argv)
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge, start_http_server
from pydantic import ValidationError

from eigenloop.config import ConfigError, ServiceConfig, load_config
from eigenloop.logs import setup_logging
from eigenloop.rpc.interceptors import RuntimeInterceptor, ServerState

log = logging.getLogger(__name__)
C = TypeVar("C", bound=ServiceConfig)

# Threads beyond `workers`, and RPCs beyond max_concurrent_rpcs that gRPC itself admits: they refuse RPCs over the
# limit at once (the interceptor's RESOURCE_EXHAUSTED, with a message) and answer health probes when at it.
HEADROOM = 8

SERVICE_UP = Gauge(
    "eigenloop_service_info", "Constant 1, labelled with the service and replica.", ["service", "replica"]
)


@dataclass(frozen=True)
class Registration:
    """One gRPC service a server hosts: its full proto name, its servicer, and the generated add function."""

    service_name: str
    servicer: object
    add_to_server: Callable[[Any, grpc.Server], None]


class DrainAware:
    """A servicer with multiplexed streams, which refuse new keys while the server drains
    (eigenloop.rpc.mux.serve_keys): the runtime hands it its state when it starts serving."""

    serving: ServerState | None = None

    def draining(self) -> bool:
        return self.serving is not None and self.serving.draining


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the RPC with `code` and a human message (grpc's own abort raises; this tells the type checker)."""
    context.abort(code, message)
    raise AssertionError("unreachable: ServicerContext.abort raises")


def episode_request_kind(request: Message, context: grpc.ServicerContext, *, opened: bool, holds: str) -> str:
    """Which field of a per-episode stream request's oneof is set, enforcing "the first request opens, once".

    Shared by the episode streams (toolenv Session, user_sim Converse); `holds` names what an opened stream
    holds, e.g. "an open session".
    """
    oneof = request.DESCRIPTOR.oneofs[0]
    kind = request.WhichOneof(oneof.name)
    if kind is None:
        fields = ", ".join(f.name for f in oneof.fields)
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"empty {type(request).__name__}: set one of {fields}")
    if kind == "open" and opened:
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"this stream already has {holds}; open a new stream")
    if kind != "open" and not opened:
        abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"'{kind}' before 'open': the first request must be 'open'")
    return str(kind)


def server_options(config: ServiceConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        # Without this, a second server could bind the same port and silently share its traffic.
        ("grpc.so_reuseport", 0),
    ]


class ServiceRuntime:
    """A running service: gRPC server, health, reflection, /metrics, and the SIGTERM drain."""

    def __init__(self, name: str, config: ServiceConfig, registrations: Sequence[Registration]) -> None:
        self.name = name
        self.config = config
        self.registrations = list(registrations)
        # An RPC beyond the worker count would wait for a free thread with no bound: refuse it instead.
        limit = config.max_concurrent_rpcs or config.workers
        self.state = ServerState(config.max_streams_per_client, max_in_flight=limit)
        self.health = health.HealthServicer()
        token = config.auth_token.get_secret_value() if config.auth_token else None
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers + HEADROOM, thread_name_prefix=f"{name}-rpc"),
            interceptors=[RuntimeInterceptor(self.state, token)],
            options=server_options(config),
            maximum_concurrent_rpcs=limit + HEADROOM,  # the backstop, should a burst exhaust the headroom
        )
        self.port = 0
        self.metrics_port = 0
        self._metrics_httpd: Any = None
        self._stop = threading.Event()

    @property
    def replica_id(self) -> str:
        return self.config.replica_id or f"{self.name}@{self.config.host}:{self.port}"

    def start(self) -> None:
        for reg in self.registrations:
            reg.add_to_server(reg.servicer, self.server)
            if isinstance(reg.servicer, DrainAware):
                reg.servicer.serving = self.state
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [reg.service_name for reg in self.registrations]
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        address = f"{self.config.host}:{self.config.port}"
        credentials = self._credentials()
        self.port = (
            self.server.add_secure_port(address, credentials) if credentials else self.server.add_insecure_port(address)
        )
        if self.port == 0:
            raise OSError(f"{self.name}: cannot bind {address}")
        self._metrics_httpd, _ = start_http_server(
            self.config.metrics_port, addr=self.config.metrics_host or self.config.host
        )
        self.metrics_port = self._metrics_httpd.server_port
        self.server.start()
        for service_name in ["", *names]:
            self.health.set(service_name, health_pb2.HealthCheckResponse.SERVING)
        SERVICE_UP.labels(self.name, self.replica_id).set(1)
        log.info(
            "serving",
            extra={
                "grpc_port": self.port,
                "metrics_port": self.metrics_port,
                "services": names,
                "host": self.config.host,
            },
        )

    def _credentials(self) -> grpc.ServerCredentials | None:
        cfg = self.config
        if cfg.tls_cert is None:
            return None
        if cfg.tls_key is None:
            raise ConfigError("tls_cert is set but tls_key is not")
        ca = cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca else None
        return grpc.ssl_server_credentials(
            [(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )

    def request_stop(self) -> None:
        self._stop.set()

    def drain(self) -> bool:
        """Health → NOT_SERVING, refuse new RPCs, let in-flight ones finish within the grace period, stop.

        Returns True when every in-flight RPC finished in time.
        """
        started = time.monotonic()
        self.state.draining = True
        self.health.enter_graceful_shutdown()
        log.info("draining", extra={"in_flight": self.state.in_flight, "grace_period_s": self.config.grace_period_s})
        finished = self.state.wait_idle(self.config.grace_period_s)
        if not finished:
            log.warning("grace period over; cancelling open RPCs", extra={"in_flight": self.state.in_flight})
        self.server.stop(grace=0.5).wait()
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
        log.info("stopped", extra={"drain_s": round(time.monotonic() - started, 3), "clean": finished})
        return finished

    def serve(self) -> int:
        """Start, block until SIGTERM/SIGINT, drain, and return the process exit code (0 on a clean drain)."""
        self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.request_stop())
        while not self._stop.wait(timeout=1.0):
            pass
        self.drain()
        return 0


def run_service(
    name: str,
    config_cls: type[C],
    build: Callable[[C], Sequence[Registration]],
    argv: Sequence[str] | None = None,
) -> int:
    """The `main` of every service: load config, set up logs, build servicers, serve until told to stop."""
    try:
        config = load_config(config_cls, argv, prog=f"eigenloop-{name}")
    except (ConfigError, ValidationError) as exc:
        print(f"eigenloop-{name}: invalid configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(name, config.log_level, config.log_json)
    runtime = ServiceRuntime(name, config, build(config))
    return runtime.serve()
