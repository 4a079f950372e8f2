"""A bidirectional stream used in lock-step: each request gets exactly one response, in order.

Both long-lived per-episode streams (toolenv Session, user_sim Converse) speak this way; the helper keeps
the queue-fed request iterator and the end-of-stream handling in one place.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

Request = TypeVar("Request")
Response = TypeVar("Response")
_CLOSE = object()
_Sent = TypeVar("_Sent", contravariant=True)
_Received = TypeVar("_Received", covariant=True)


class StreamClosedError(RuntimeError):
    """The server ended the stream without answering a request: the episode is infrastructure-failed."""


class Exchange(Protocol[_Sent, _Received]):
    """What a session client needs of its stream: a LockstepStream of its own, or one key of a multiplexed
    stream (eigenloop.rpc.mux.MuxStream)."""

    def send(self, request: _Sent) -> _Received: ...

    def send_many(self, requests: Sequence[_Sent]) -> Sequence[_Received]: ...

    def close(self) -> None: ...

    def cancel(self) -> None: ...


class LockstepStream(Generic[Request, Response]):
    def __init__(self, method: Callable[..., Any], *, timeout_s: float, service: str) -> None:
        self._requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._responses: Any = method(iter(self._requests.get, _CLOSE), timeout=timeout_s)
        self.service = service

    def _next(self) -> Response:
        try:
            response: Response = next(self._responses)
        except StopIteration:
            raise StreamClosedError(f"{self.service} closed the stream without a response") from None
        return response

    def send(self, request: Request) -> Response:
        self._requests.put(request)
        return self._next()

    def send_many(self, requests: Sequence[Request]) -> list[Response]:
        """Pipelined: send all, then read all (responses still come one per request, in order)."""
        for request in requests:
            self._requests.put(request)
        return [self._next() for _ in requests]

    def close(self) -> None:
        """Half-close and wait for the server to finish the stream (which frees its state there)."""
        self._requests.put(_CLOSE)
        responses: Iterator[Response] = self._responses
        for _ in responses:
            pass

    def cancel(self) -> None:
        self._responses.cancel()


class StreamOwner:
    """Close-or-cancel for a client object that owns one stream: a clean exit half-closes it (the server
    finishes and frees its state), an exception cancels it."""

    def close(self) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.cancel()
