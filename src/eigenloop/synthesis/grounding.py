"""Where the generator executes gold calls: an in-process EnvSession when embedded, a toolenv session otherwise."""

from __future__ import annotations

from typing import Protocol

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import load_domain
from eigenloop.env.remote import ToolEnvClient
from eigenloop.env.session import EnvSession


class GroundingSession(Protocol):
    def call(self, call: pb.ToolCall) -> pb.ToolResult: ...

    def close(self) -> None: ...


class Sessions(Protocol):
    """Opens a session on `domain`'s world `seed` with `initial` applied; raises when the state cannot be built."""

    def __call__(self, domain: str, initial: pb.InitialState, seed: int) -> GroundingSession: ...


class _LocalSession:
    def __init__(self, session: EnvSession) -> None:
        self._session = session

    def call(self, call: pb.ToolCall) -> pb.ToolResult:
        return self._session.call(call)

    def close(self) -> None:
        """Nothing to free: the session is garbage once dropped."""


def local_sessions(domain: str, initial: pb.InitialState, seed: int) -> GroundingSession:
    return _LocalSession(EnvSession(load_domain(domain), initial_state=initial, seed=seed))


class RemoteSessions:
    """Sessions on a toolenv service (round-robin over its replicas)."""

    def __init__(self, client: ToolEnvClient) -> None:
        self.client = client

    def __call__(self, domain: str, initial: pb.InitialState, seed: int) -> GroundingSession:
        return self.client.session(domain, initial_state=initial, seed=seed)
