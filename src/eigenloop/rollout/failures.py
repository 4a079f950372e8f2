"""How the rollout manager tells an infrastructure failure (retry elsewhere, never score) from a limit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from eigenloop.rpc.stream import StreamClosedError
from eigenloop.usersim.remote import ReplicaFailedError

# The caller's own mistakes: retrying them elsewhere cannot help, so they are bugs, not infrastructure failures.
_CALLER_ERRORS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)


class InfraError(RuntimeError):
    """A service failed mid-episode (broken stream, unavailable replica, its deadline): the episode is
    infrastructure-failed, and retried on another replica (`address` is the one to avoid) or dropped."""

    def __init__(self, service: str, address: str, cause: str) -> None:
        super().__init__(f"{service} {address or '?'}: {cause}")
        self.service = service
        self.address = address


class TurnDeadlineError(TimeoutError):
    """A policy turn took longer than the per-turn deadline: the episode is truncated, not failed."""


@contextmanager
def infra_errors(service: str, address: Callable[[], str] | str = "") -> Iterator[None]:
    """Turn transport failures inside the block into InfraError naming `service` and the replica address."""

    def where() -> str:
        return address() if callable(address) else address

    try:
        yield
    except ReplicaFailedError as exc:
        raise InfraError(service, exc.address, str(exc)) from exc
    except StreamClosedError as exc:
        raise InfraError(service, where(), str(exc)) from exc
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        if code in _CALLER_ERRORS:
            raise
        name = code.name if code is not None else "RpcError"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        raise InfraError(service, where(), f"{name}: {details}") from exc
