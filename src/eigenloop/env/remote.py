"""Client side of toolenv: the same session interface as EnvSession, over one Session stream."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import toolenv_pb2 as tpb
from eigenloop.contracts.v1 import toolenv_pb2_grpc
from eigenloop.rpc.client import ClientTLS, ServicePolicy, connect
from eigenloop.rpc.mux import Multiplexers
from eigenloop.rpc.pool import Lease
from eigenloop.rpc.stream import Exchange, LockstepStream, StreamOwner

TOOLENV_POLICY = ServicePolicy(
    service="eigenloop.v1.ToolEnv",
    idempotent_methods=("ListDomains", "DescribeDomain"),
    streaming_methods=("Session",),
    multiplexed_methods=("Sessions",),
    unary_timeout_s=10.0,
    stream_timeout_s=900.0,
)


def session_streams() -> Multiplexers:
    """A Sessions stream per toolenv replica, made on first use."""
    return Multiplexers(
        lambda channel: toolenv_pb2_grpc.ToolEnvStub(channel).Sessions, tpb.SessionFrame, service="toolenv"
    )


class RemoteSession(StreamOwner):
    """One toolenv session; each request waits for its response, so calls see each other's effects.

    Its stream is a Session stream of its own or one key of a Sessions stream."""

    def __init__(self, stream: Exchange[tpb.SessionRequest, tpb.SessionResponse], request: tpb.OpenSession) -> None:
        self._stream = stream
        self.opened = self._stream.send(tpb.SessionRequest(open=request)).opened
        self.session_id = self.opened.session_id

    def call(self, call: pb.ToolCall) -> pb.ToolResult:
        return self._stream.send(tpb.SessionRequest(call=call)).result

    def call_many(self, calls: Sequence[pb.ToolCall]) -> list[pb.ToolResult]:
        """Send several calls without waiting in between (e.g. one turn's parallel tool calls); results in order.

        The calls still execute one after another and see each other's effects, exactly as with `call`.
        """
        return [r.result for r in self._stream.send_many([tpb.SessionRequest(call=c) for c in calls])]

    def evaluate(self, messages: Sequence[pb.Message] = (), checker: pb.Checker | None = None) -> pb.Reward:
        request = tpb.EvaluateRequest(messages=list(messages), checker=checker)
        return self._stream.send(tpb.SessionRequest(evaluate=request)).reward

    def state(self) -> tpb.StateSnapshot:
        return self._stream.send(tpb.SessionRequest(get_state=tpb.GetStateRequest())).state

    def close(self) -> None:
        self._stream.close()

    def cancel(self) -> None:
        """Abandon the session mid-episode (the server frees it)."""
        self._stream.cancel()


class ToolEnvClient:
    """A toolenv client over every replica at `addresses` (new sessions spread round-robin).

    With `multiplexed`, sessions are keys of one Sessions stream (on one replica) instead of a Session stream
    each: far less CPU per message for a client with many sessions open at once."""

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        auth_token: str | None = None,
        tls: ClientTLS | None = None,
        session_timeout_s: float = TOOLENV_POLICY.stream_timeout_s,
        multiplexed: bool = False,
    ) -> None:
        self.channel = connect(addresses, TOOLENV_POLICY, auth_token=auth_token, tls=tls)
        self.stub = toolenv_pb2_grpc.ToolEnvStub(self.channel)
        self.session_timeout_s = session_timeout_s
        self.multiplexed = multiplexed
        self._streams = session_streams()
        self._lease = Lease(str(addresses), self.channel)

    def list_domains(self) -> list[tpb.DomainSummary]:
        return list(self.stub.ListDomains(tpb.ListDomainsRequest()).domains)

    def describe(self, domain: str) -> tpb.DomainDescription:
        description: tpb.DomainDescription = self.stub.DescribeDomain(tpb.DescribeDomainRequest(domain=domain))
        return description

    def session(
        self,
        domain: str = "",
        *,
        task: pb.Task | None = None,
        initial_state: pb.InitialState | None = None,
        seed: int = 0,
    ) -> RemoteSession:
        request = tpb.OpenSession(domain=domain, task=task, initial_state=initial_state, seed=seed)
        if self.multiplexed:
            return RemoteSession(self._streams.open(self._lease, self.session_timeout_s), request)
        return RemoteSession(
            LockstepStream(self.stub.Session, timeout_s=self.session_timeout_s, service="toolenv"), request
        )

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    def close(self) -> None:
        self._streams.close()
        self.channel.close()

    def __enter__(self) -> ToolEnvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
