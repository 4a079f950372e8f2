"""Many keyed lock-step exchanges over one bidi stream per replica (toolenv Sessions, user_sim Conversations).

One stream per episode costs the client a gRPC call, a thread that feeds the call's request iterator and
several thread hand-offs per message: at a hundred episodes in flight that was most of the rollout manager's CPU
(benchmarks/rollout.py). Here a replica gets one stream whose frames carry many keys' messages. The client sends
in one frame whatever its episodes queued since the last one; the server answers each key as its work finishes.
A key behaves as its own stream would: its requests are answered in order, `close` frees it, and an error ends
only that key (a KeyError on the wire, raised on the client as KeyRpcError with the same status code).

Frames are the services' own messages (e.g. SessionFrame / SessionResultFrame); all of them have `items`, whose
entries have `key` and `request`/`close` (client to server) or `key` and `response`/`error` (server to client).
"""

from __future__ import annotations

import functools
import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, Protocol, TypeVar

import grpc

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.rpc.pool import Lease
from eigenloop.rpc.stream import StreamClosedError

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")
_END = object()
_DRAIN_POLL_S = 0.25
_DRAINING = pb.KeyError(code="UNAVAILABLE", message="server is draining; retry on another replica")


class KeyRpcError(grpc.RpcError):  # type: ignore[misc]
    """One key of a multiplexed stream ended with a status, as its own stream's RpcError would have."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@dataclass(frozen=True)
class _Broken:
    reason: str


# -- client ----------------------------------------------------------------------------------------------------


class Multiplexer:
    """The client end of one multiplexed stream: `open()` a key, then use it as a lock-step stream."""

    def __init__(self, method: Callable[..., Any], frame: type[Any], *, service: str) -> None:
        self.service = service
        self._frame = frame
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._inboxes: dict[int, queue.SimpleQueue[Any]] = {}
        self._keys = itertools.count(1)
        self._lock = threading.Lock()
        self.broken: str | None = None
        self._responses = method(self._frames())
        threading.Thread(target=self._receive, name=f"mux {service}", daemon=True).start()

    def _frames(self) -> Iterator[Any]:
        """The request iterator gRPC consumes: every item queued since the last frame goes in the next one."""
        while True:
            frame, ended = _frame_of(self._outbox.get(), self._outbox, self._frame)
            if frame.items:
                yield frame
            if ended:
                return

    def _receive(self) -> None:
        reason = "the server ended the stream"
        try:
            for frame in self._responses:
                for item in frame.items:
                    inbox = self._inboxes.get(item.key)
                    if inbox is not None:  # None: a key given up on (deadline, cancel) got its late answer
                        inbox.put(item)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            reason = f"{code.name if code else 'RpcError'}: {exc.details() if hasattr(exc, 'details') else exc}"
        finally:
            with self._lock:
                self.broken = reason
                inboxes = list(self._inboxes.values())
            for inbox in inboxes:
                inbox.put(_Broken(reason))
            self._outbox.put(_END)  # frees gRPC's request-consuming thread

    def open(self, timeout_s: float) -> MuxStream[Any, Any]:
        """A new key; each of its requests waits at most `timeout_s` for its answer."""
        with self._lock:
            if self.broken is not None:
                raise StreamClosedError(f"{self.service}: {self.broken}")
            key = next(self._keys)
            inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
            self._inboxes[key] = inbox
        return MuxStream(self, key, inbox, timeout_s)

    def _send(self, key: int, request: Any) -> None:
        self._outbox.put({"key": key, "request": request})

    def _forget(self, key: int) -> None:
        self._inboxes.pop(key, None)

    def _close_key(self, key: int) -> None:
        if self._inboxes.pop(key, None) is not None and self.broken is None:
            self._outbox.put({"key": key, "close": True})

    def close(self) -> None:
        """Half-close: the server answers what it was asked, frees every key and ends the stream."""
        self._outbox.put(_END)


class MuxStream(Generic[Request, Response]):
    """One key: the same methods as LockstepStream, so session clients run over either."""

    def __init__(self, mux: Multiplexer, key: int, inbox: queue.SimpleQueue[Any], timeout_s: float) -> None:
        self._mux = mux
        self.key = key
        self._inbox = inbox
        self.timeout_s = timeout_s
        self.service = mux.service

    def _next(self) -> Response:
        try:
            item = self._inbox.get(timeout=self.timeout_s)
        except queue.Empty:
            self.close()
            raise KeyRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{self.service} did not answer within {self.timeout_s:g}s"
            ) from None
        if isinstance(item, _Broken):
            self._inbox.put(item)  # every later read fails the same way
            raise StreamClosedError(f"{self.service}: {item.reason}")
        if item.HasField("error"):
            self.close()  # the server ended the key already; the close frees nothing there and is harmless
            raise KeyRpcError(_status(item.error.code), item.error.message)
        response: Response = item.response
        return response

    def send(self, request: Request) -> Response:
        self._mux._send(self.key, request)
        return self._next()

    def send_many(self, requests: Sequence[Request]) -> list[Response]:
        """Pipelined: send all, then read all (answered one per request, in order)."""
        for request in requests:
            self._mux._send(self.key, request)
        return [self._next() for _ in requests]

    def close(self) -> None:
        """Free the key on the server (no answer is awaited; later answers to it are dropped)."""
        self._mux._close_key(self.key)

    cancel = close

    def call(self, request: Request) -> Response:
        """The one request of a one-shot key (a generation): the server frees such a key once it answered."""
        try:
            return self.send(request)
        finally:
            self._mux._forget(self.key)


def _frame_of(first: Any, outbox: queue.SimpleQueue[Any], frame_type: type[Any]) -> tuple[Any, bool]:
    """`first` and every item already waiting in `outbox` (each the fields of one entry of `items`) as one frame,
    and whether the end of the stream came among them."""
    frame, item = frame_type(), first
    while item is not _END:
        frame.items.add(**item)
        try:
            item = outbox.get_nowait()
        except queue.Empty:
            return frame, False
    return frame, True


def _status(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


class Multiplexers:
    """One Multiplexer per replica, made on first use and replaced once its stream broke (a replica that
    restarted, a channel the pool closed). A broken one is forgotten at the next `open`, so replicas that
    discovery removed leave nothing behind."""

    def __init__(
        self, method_of: Callable[[grpc.Channel], Callable[..., Any]], frame: type[Any], *, service: str
    ) -> None:
        self._method_of = method_of
        self._frame = frame
        self.service = service
        self._lock = threading.Lock()
        self._by_address: dict[str, Multiplexer] = {}

    def open(self, lease: Lease, timeout_s: float) -> MuxStream[Any, Any]:
        with self._lock:
            self._by_address = {a: m for a, m in self._by_address.items() if m.broken is None}
            mux = self._by_address.get(lease.address)
            if mux is None:
                method = self._method_of(lease.channel)
                mux = Multiplexer(method, self._frame, service=f"{self.service} {lease.address}")
                self._by_address[lease.address] = mux
        return mux.open(timeout_s)

    def close(self) -> None:
        with self._lock:
            muxes, self._by_address = list(self._by_address.values()), {}
        for mux in muxes:
            mux.close()


# -- server ----------------------------------------------------------------------------------------------------


class KeyAbortedError(Exception):
    """Raised by a key's context in place of ending the whole RPC."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class KeyContext:
    """What a key's handler gets as its ServicerContext: `abort` ends that key only; the rest is the stream's."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise KeyAbortedError(code, details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class KeyHandler(Protocol):
    """One key's state on the server: the same object serves a per-episode stream's requests."""

    def handle(self, request: Any) -> Any: ...

    def close(self) -> None: ...


@dataclass
class _Key:
    """One key's handler and its work, done one item at a time in the order it came (inline or on the executor)."""

    handler: KeyHandler
    ended: bool = False
    running: bool = False
    queued: deque[tuple[Callable[[], None], bool]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards `running` and `queued`

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.handler.close()


def _never() -> bool:
    return False


def _always(request: Any) -> bool:
    return True


def serve_keys(
    frames: Iterator[Any],
    context: grpc.ServicerContext,
    result_frame: type[Any],
    open_key: Callable[[grpc.ServicerContext], KeyHandler],
    executor: Executor | None = None,
    slow: Callable[[Any], bool] = _always,
    draining: Callable[[], bool] = _never,
    one_shot: bool = False,
) -> Iterator[Any]:
    """The server end of a multiplexed stream. A key's first request makes its handler (`open_key`, given the
    key's context). Each key's requests are handled one at a time in order, and answered as soon as each is done:
    inline, or on `executor` for the requests `slow` picks (a user model's turn, a sandboxed checker), so that one
    key's slow request never holds up the others. A handler may return a Future (a generation the engine batches):
    its result is the answer when it resolves. With `one_shot` every key is one request, forgotten once answered
    (no close). Ends after the client's half-close once every request is answered; every key still open then is
    closed.

    While the server drains, a new key is refused (UNAVAILABLE: the client retries it on another replica) and the
    stream ends once its last key closed, so a drain lets running episodes finish as it does per-episode streams."""
    outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    keys: dict[int, _Key] = {}
    busy = threading.Condition()
    in_flight = 0

    def answer(key: int, entry: _Key, request: Any) -> None:
        nonlocal in_flight
        try:
            if entry.ended:
                raise KeyAbortedError(grpc.StatusCode.FAILED_PRECONDITION, f"key {key} has already ended")
            response = entry.handler.handle(request)
        except Exception as exc:
            fail(key, entry, exc)
            return
        if not isinstance(response, Future):
            outbox.put({"key": key, "response": response})
            return
        with busy:
            in_flight += 1  # until the future resolves: the stream's end waits for it

        def deliver(future: Future[Any]) -> None:
            nonlocal in_flight
            try:
                outbox.put({"key": key, "response": future.result()})
            except Exception as exc:
                fail(key, entry, exc)
            finally:
                with busy:
                    in_flight -= 1
                    busy.notify_all()

        response.add_done_callback(deliver)

    def fail(key: int, entry: _Key, exc: BaseException) -> None:
        if isinstance(exc, KeyAbortedError):
            outbox.put({"key": key, "error": pb.KeyError(code=exc.code.name, message=exc.details)})
        else:
            log.error("a multiplexed request failed", exc_info=exc, extra={"key": key})
            outbox.put({"key": key, "error": pb.KeyError(code="INTERNAL", message=f"{type(exc).__name__}: {exc}")})
        entry.end()

    def schedule(entry: _Key, work: Callable[[], None], offload: bool) -> None:
        """`work` in the key's turn: now if the key is idle, else after what it was given before."""
        nonlocal in_flight
        with busy:
            in_flight += 1
        with entry.lock:
            if entry.running:
                entry.queued.append((work, offload))
                return
            entry.running = True
        if offload and executor is not None:
            executor.submit(turns, entry, work, True)
        else:
            turns(entry, work, False)

    def turns(entry: _Key, work: Callable[[], None], on_executor: bool) -> None:
        """Do the key's work until none is queued; what must be offloaded moves to the executor."""
        nonlocal in_flight
        while True:
            try:
                work()
            finally:
                with busy:
                    in_flight -= 1
                    busy.notify_all()
            with entry.lock:
                if not entry.queued:
                    entry.running = False
                    return
                work, offload = entry.queued.popleft()
            if offload and not on_executor and executor is not None:
                executor.submit(turns, entry, work, True)
                return

    def read() -> None:
        try:
            for frame in frames:
                for item in frame.items:
                    if item.close:
                        closing = keys.pop(item.key, None)
                        if closing is not None:
                            schedule(closing, closing.end, False)
                        continue
                    entry = keys.get(item.key)
                    if entry is None and draining():
                        outbox.put({"key": item.key, "error": _DRAINING})
                        continue
                    if entry is None:
                        entry = _Key(open_key(KeyContext(context)))
                        if not one_shot:
                            keys[item.key] = entry
                    schedule(entry, functools.partial(answer, item.key, entry, item.request), slow(item.request))
        except grpc.RpcError:
            pass  # the client went away: its keys are closed below
        except Exception:
            log.exception("reading a multiplexed stream failed")
        finally:
            with busy:
                busy.wait_for(lambda: in_flight == 0)
            for entry in keys.values():
                entry.end()
            outbox.put(_END)

    threading.Thread(target=read, name="mux-read", daemon=True).start()
    while True:
        try:
            item = outbox.get(timeout=_DRAIN_POLL_S)
        except queue.Empty:
            if draining() and not keys and in_flight == 0:
                return
            continue
        frame, ended = _frame_of(item, outbox, result_frame)
        if frame.items:
            yield frame
        if ended:
            return
