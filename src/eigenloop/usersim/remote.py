"""Client side of user_sim: conversations spread over replicas (least-loaded), each pinned to its replica."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as upb
from eigenloop.contracts.v1 import user_sim_pb2_grpc
from eigenloop.rpc.client import ClientTLS, ServicePolicy
from eigenloop.rpc.pool import Lease, ReplicaPool
from eigenloop.rpc.stream import LockstepStream, StreamClosedError, StreamOwner

USER_SIM_POLICY = ServicePolicy(service="eigenloop.v1.UserSim", streaming_methods=("Converse",), stream_timeout_s=900.0)


class ReplicaFailedError(RuntimeError):
    """The replica serving a conversation failed mid-way: the episode is infrastructure-failed."""

    def __init__(self, address: str, cause: str) -> None:
        super().__init__(f"user_sim replica {address} failed: {cause}")
        self.address = address


class RemoteConversation(StreamOwner):
    """One simulated user on one replica; `turn` is the user's latest turn."""

    def __init__(
        self, pool: ReplicaPool, request: upb.OpenConversation, timeout_s: float, avoid: Sequence[str] = ()
    ) -> None:
        self._pool = pool
        self._lease: Lease | None = pool.acquire(avoid)
        self.address = self._lease.address
        stub = user_sim_pb2_grpc.UserSimStub(self._lease.channel)
        self._stream: LockstepStream[upb.ConverseRequest, upb.ConverseResponse] = LockstepStream(
            stub.Converse, timeout_s=timeout_s, service=f"user_sim {self.address}"
        )
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
    """Conversations over every user_sim replica at `addresses` (a list, or a DNS name of a headless Service)."""

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        timeout_s: float = USER_SIM_POLICY.stream_timeout_s,
        auth_token: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.pool = ReplicaPool(addresses, USER_SIM_POLICY, auth_token=auth_token, tls=tls)
        self.timeout_s = timeout_s

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
        return RemoteConversation(self.pool, request, self.timeout_s, avoid)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> UserSimClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
