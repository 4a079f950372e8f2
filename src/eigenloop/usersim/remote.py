"""Client side of user_sim: conversations spread over replicas (least-loaded), each pinned to its replica."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as upb
from eigenloop.contracts.v1 import user_sim_pb2_grpc
from eigenloop.rpc.client import ClientTLS, ServicePolicy
from eigenloop.rpc.mux import Multiplexers
from eigenloop.rpc.pool import Lease, ReplicaPool
from eigenloop.rpc.stream import Exchange, LockstepStream, StreamClosedError, StreamOwner

USER_SIM_POLICY = ServicePolicy(
    service="eigenloop.v1.UserSim",
    streaming_methods=("Converse",),
    multiplexed_methods=("Conversations",),
    stream_timeout_s=900.0,
)
StreamOpener = Callable[[Lease, float], Exchange[upb.ConverseRequest, upb.ConverseResponse]]


class ReplicaFailedError(RuntimeError):
    """The replica serving a conversation failed mid-way: the episode is infrastructure-failed."""

    def __init__(self, address: str, cause: str) -> None:
        super().__init__(f"user_sim replica {address} failed: {cause}")
        self.address = address


def converse_stream(lease: Lease, timeout_s: float) -> Exchange[upb.ConverseRequest, upb.ConverseResponse]:
    """A Converse stream of the conversation's own."""
    stub = user_sim_pb2_grpc.UserSimStub(lease.channel)
    return LockstepStream(stub.Converse, timeout_s=timeout_s, service=f"user_sim {lease.address}")


class RemoteConversation(StreamOwner):
    """One simulated user on one replica; `turn` is the user's latest turn. Its stream comes from `open_stream`:
    a Converse stream of its own by default, or one key of a replica's Conversations stream."""

    def __init__(
        self,
        pool: ReplicaPool,
        request: upb.OpenConversation,
        timeout_s: float,
        avoid: Sequence[str] = (),
        open_stream: StreamOpener = converse_stream,
    ) -> None:
        self._pool = pool
        self._lease: Lease | None = pool.acquire(avoid)
        self.address = self._lease.address
        try:
            self._stream = open_stream(self._lease, timeout_s)
        except StreamClosedError as exc:
            self._release()
            raise ReplicaFailedError(self.address, str(exc)) from None
        self.replica_id = ""
        self.turn = self._send(upb.ConverseRequest(open=request))

    def _send(self, request: upb.ConverseRequest) -> upb.UserTurn:
        try:
            response = self._stream.send(request)
        except grpc.RpcError as exc:
            self._release()
            if exc.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
            ):
                raise  # the caller's mistake, not the replica's
            raise ReplicaFailedError(self.address, f"{exc.code().name}: {exc.details()}") from None
        except StreamClosedError as exc:
            self._release()
            raise ReplicaFailedError(self.address, str(exc)) from None
        self.replica_id = response.replica_id
        return response.turn

    def agent_message(self, content: str) -> upb.UserTurn:
        self.turn = self._send(upb.ConverseRequest(agent_message=upb.AgentMessage(content=content)))
        return self.turn

    def tool_results(self, results: Sequence[pb.ToolResult]) -> upb.UserTurn:
        self.turn = self._send(upb.ConverseRequest(tool_results=upb.UserToolResults(results=list(results))))
        return self.turn

    def _release(self) -> None:
        if self._lease is not None:
            self._pool.release(self._lease)
            self._lease = None

    def close(self) -> None:
        try:
            self._stream.close()
        except grpc.RpcError:
            pass  # the replica went away after the conversation ended: nothing is lost
        finally:
            self._release()

    def cancel(self) -> None:
        self._stream.cancel()
        self._release()


class UserSimClient:
    """Conversations over every user_sim replica at `addresses` (a list, a DNS name of a headless Service, or a
    live address source), each on the least-loaded replica.

    With `multiplexed`, a conversation is a key of the one Conversations stream kept to its replica instead of a
    Converse stream of its own: far less CPU per message for a client with many conversations at once."""

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        timeout_s: float = USER_SIM_POLICY.stream_timeout_s,
        auth_token: str | None = None,
        tls: ClientTLS | None = None,
        refresh_s: float = 10.0,
        multiplexed: bool = False,
    ) -> None:
        self.pool = ReplicaPool(addresses, USER_SIM_POLICY, auth_token=auth_token, tls=tls, refresh_s=refresh_s)
        self.timeout_s = timeout_s
        self.multiplexed = multiplexed
        self._streams = Multiplexers(
            lambda channel: user_sim_pb2_grpc.UserSimStub(channel).Conversations, upb.ConverseFrame, service="user_sim"
        )

    def conversation(
        self,
        task: pb.Task,
        *,
        sampling: pb.SamplingParams | None = None,
        max_turns: int = 0,
        episode_id: str = "",
        avoid: Sequence[str] = (),
    ) -> RemoteConversation:
        """Open a conversation on the least-loaded replica (not one in `avoid`, e.g. where a retry failed)."""
        request = upb.OpenConversation(task=task, sampling=sampling, max_turns=max_turns, episode_id=episode_id)
        opener = self._streams.open if self.multiplexed else converse_stream
        return RemoteConversation(self.pool, request, self.timeout_s, avoid, opener)

    def close(self) -> None:
        self._streams.close()
        self.pool.close()

    def __enter__(self) -> UserSimClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
