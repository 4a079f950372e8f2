"""One server interceptor for the cross-cutting parts of every RPC: auth, draining, stream limits, and metrics."""

from __future__ import annotations

import hmac
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

# Health must answer while draining (probes read NOT_SERVING from it) and without a token (kubelet has none).
UNGUARDED_SERVICES = frozenset({"grpc.health.v1.Health"})

STARTED = Counter("eigenloop_grpc_server_started_total", "RPCs started.", ["grpc_service", "grpc_method", "grpc_type"])
HANDLED = Counter(
    "eigenloop_grpc_server_handled_total",
    "RPCs finished, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
LATENCY = Histogram(
    "eigenloop_grpc_server_handling_seconds",
    "Time from the start of an RPC to its status (whole stream for streaming RPCs).",
    ["grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
IN_FLIGHT = Gauge(
    "eigenloop_grpc_server_in_flight", "RPCs (and open streams) in progress.", ["grpc_service", "grpc_method"]
)


class ServerState:
    """Draining flag, the count of in-flight RPCs (which the drain waits for and `max_in_flight` caps), and open
    streams per client."""

    def __init__(self, max_streams_per_client: int | None = None, max_in_flight: int | None = None) -> None:
        self.draining = False
        self.max_streams_per_client = max_streams_per_client
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self._idle = threading.Condition()
        self._streams: Tally[str] = Tally()

    @contextmanager
    def stream_slot(self, client: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Hold one of `client`'s stream slots for the life of a stream, or refuse it with RESOURCE_EXHAUSTED."""
        limit = self.max_streams_per_client
        with self._idle:
            full = limit is not None and self._streams[client] >= limit
            if not full:
                self._streams[client] += 1
        if full:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"client {client} already holds {limit} open streams here (max_streams_per_client); close one first",
            )
        try:
            yield
        finally:
            with self._idle:
                self._streams[client] -= 1
                if self._streams[client] <= 0:
                    del self._streams[client]

    def enter(self) -> int:
        """Count one more RPC in flight; returns the count with it, so concurrent arrivals see distinct counts."""
        with self._idle:
            self._in_flight += 1
            return self._in_flight

    def leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """True when every in-flight RPC finished within `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    return {
        (False, False): "unary",
        (False, True): "server_stream",
        (True, False): "client_stream",
        (True, True): "bidi_stream",
    }[(handler.request_streaming, handler.response_streaming)]


def client_address(context: grpc.ServicerContext) -> str:
    """The client's address without its port ("ipv4:10.0.0.7"): one client may open many connections."""
    peer = str(context.peer())
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


def _code_name(context: grpc.ServicerContext, default: grpc.StatusCode) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return str(default.name)


@contextmanager
def _tracked(
    state: ServerState, labels: tuple[str, str], rpc_type: str, guarded: bool, context: grpc.ServicerContext
) -> Iterator[int]:
    """Counts one RPC from admission to status, for metrics and for the drain; yields the in-flight count with it.

    The count drops when the handler returns, before gRPC sends the status: a client that has seen its stream end
    always finds that slot free again (gRPC's own count of active RPCs drops only after the status is sent).
    """
    STARTED.labels(*labels, rpc_type).inc()
    IN_FLIGHT.labels(*labels).inc()
    position = state.enter() if guarded else 0
    start = time.perf_counter()
    default = grpc.StatusCode.OK
    try:
        yield position
    except GeneratorExit:
        default = grpc.StatusCode.CANCELLED  # the client went away mid-stream
        raise
    except BaseException:
        default = grpc.StatusCode.UNKNOWN if context.is_active() else grpc.StatusCode.CANCELLED
        raise
    finally:
        HANDLED.labels(*labels, _code_name(context, default)).inc()
        LATENCY.labels(*labels).observe(time.perf_counter() - start)
        IN_FLIGHT.labels(*labels).dec()
        if guarded:
            state.leave()


class RuntimeInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, state: ServerState, auth_token: str | None = None) -> None:
        self.state = state
        # Compared as bytes: hmac.compare_digest refuses str with non-ASCII characters (a TypeError, not a refusal).
        self.expected = f"Bearer {auth_token}".encode() if auth_token is not None else None

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        guarded = service not in UNGUARDED_SERVICES
        metadata = dict(details.invocation_metadata or ())
        labels = (service, method)
        rpc_type = _rpc_type(handler)
        interceptor = self

        def admitted(context: grpc.ServicerContext, position: int) -> AbstractContextManager[None]:
            """Admit the RPC (or abort it); a stream also holds one of its client's stream slots while it runs.

            `position` is the in-flight count including this RPC (0 for unguarded ones)."""
            if guarded and interceptor.expected is not None:
                sent = metadata.get("authorization", "")
                sent_bytes = sent if isinstance(sent, bytes) else str(sent).encode()
                if not hmac.compare_digest(sent_bytes, interceptor.expected):  # constant time: no timing oracle
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            if guarded and interceptor.state.draining:
                context.abort(grpc.StatusCode.UNAVAILABLE, "server is draining; retry on another replica")
            limit = interceptor.state.max_in_flight
            if limit is not None and position > limit:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server at max_concurrent_rpcs ({limit} RPCs and streams in flight); retry later or elsewhere",
                )
            if guarded and rpc_type != "unary":
                return interceptor.state.stream_slot(client_address(context), context)
            return nullcontext()

        # Requests are decoded here rather than by grpc, which answers an undecodable one (garbage, invalid UTF-8 in
        # a string field) with INTERNAL, as if the server were at fault: it is the client's bad input.
        deserialize = handler.request_deserializer or (lambda raw: raw)
        expected, streaming_requests = details.method, handler.request_streaming

        def decoded(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                return deserialize(raw)
            except Exception as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"undecodable request for {expected}: {exc}")

        def request_of(raw: Any, context: grpc.ServicerContext) -> Any:
            if streaming_requests:
                return (decoded(item, context) for item in raw)
            return decoded(raw, context)

        def wrap_unary_response(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def wrapped(raw: Any, context: grpc.ServicerContext) -> Any:
                tracked = _tracked(interceptor.state, labels, rpc_type, guarded, context)
                with tracked as position, admitted(context, position):
                    return behavior(request_of(raw, context), context)

            return wrapped

        def wrap_stream_response(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Callable[..., Any]:
            def wrapped(raw: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                tracked = _tracked(interceptor.state, labels, rpc_type, guarded, context)
                with tracked as position, admitted(context, position):
                    yield from behavior(request_of(raw, context), context)

            return wrapped

        handler = handler._replace(request_deserializer=None)
        if handler.unary_unary:
            return handler._replace(unary_unary=wrap_unary_response(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=wrap_unary_response(handler.stream_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=wrap_stream_response(handler.unary_stream))
        return handler._replace(stream_stream=wrap_stream_response(handler.stream_stream))
