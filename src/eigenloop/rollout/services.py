"""Where episodes get their environment and simulated user: in this process, or toolenv / user_sim over gRPC.

Each side has a provider (`open` one per episode, on the least-busy replica not in `avoid`) and a per-episode
session with the same methods either way, so the rollout manager runs embedded or distributed unchanged.
Remote failures surface as InfraError naming the replica, which the manager avoids when it retries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import toolenv_pb2 as tpb
from eigenloop.contracts.v1 import toolenv_pb2_grpc
from eigenloop.contracts.v1 import user_sim_pb2 as upb
from eigenloop.domains import load_domain
from eigenloop.env.remote import TOOLENV_POLICY, RemoteSession, session_streams
from eigenloop.env.session import EnvSession
from eigenloop.protocol import tool_schema
from eigenloop.rollout.discovery import discover
from eigenloop.rollout.failures import InfraError, infra_errors
from eigenloop.rpc.pool import Lease, ReplicaPool
from eigenloop.usersim.conversation import Conversation
from eigenloop.usersim.policies import UserPolicy
from eigenloop.usersim.remote import USER_SIM_POLICY, RemoteConversation, UserSimClient

LOCAL = "in-process"


class EnvironmentSession(Protocol):
    address: str
    policy: str
    """The domain's policy text (the agent's instructions)."""

    @property
    def tools(self) -> Sequence[pb.ToolSchema]:
        """The agent's tools."""
        ...

    def call_many(self, calls: Sequence[pb.ToolCall]) -> list[pb.ToolResult]: ...

    def evaluate(self, messages: Sequence[pb.Message]) -> pb.Reward: ...

    def close(self) -> None: ...

    def cancel(self) -> None: ...


class UserSession(Protocol):
    address: str
    turn: upb.UserTurn

    def agent_message(self, content: str) -> upb.UserTurn: ...

    def tool_results(self, results: Sequence[pb.ToolResult]) -> upb.UserTurn: ...

    def close(self) -> None: ...

    def cancel(self) -> None: ...


class Environments(Protocol):
    def open(self, task: pb.Task, *, avoid: Sequence[str] = ()) -> EnvironmentSession:
        """The task's environment, built with the seed the task was grounded in (`provenance.seed`)."""
        ...


class Users(Protocol):
    def open(self, task: pb.Task, *, seed: int, episode_id: str, avoid: Sequence[str] = ()) -> UserSession: ...


# -- in-process ----------------------------------------------------------------------------------------------


class _LocalEnvironment:
    address = LOCAL

    def __init__(self, task: pb.Task) -> None:
        self._session = EnvSession(load_domain(task.domain), task=task, seed=task.provenance.seed)
        self.tools = [tool_schema(t) for t in self._session.domain.agent_tools]
        self.policy = self._session.domain.policy

    def call_many(self, calls: Sequence[pb.ToolCall]) -> list[pb.ToolResult]:
        return [self._session.call(c) for c in calls]

    def evaluate(self, messages: Sequence[pb.Message]) -> pb.Reward:
        return self._session.evaluate(messages)

    def close(self) -> None:
        pass

    cancel = close


class LocalEnvironments:
    """Environments built in this process (the code the toolenv service runs per Session stream)."""

    def open(self, task: pb.Task, *, avoid: Sequence[str] = ()) -> EnvironmentSession:
        return _LocalEnvironment(task)


class _LocalUser:
    address = LOCAL

    def __init__(self, conversation: Conversation) -> None:
        self._conversation = conversation
        self.turn = conversation.open()

    def agent_message(self, content: str) -> upb.UserTurn:
        self.turn = self._conversation.agent_message(content)
        return self.turn

    def tool_results(self, results: Sequence[pb.ToolResult]) -> upb.UserTurn:
        self.turn = self._conversation.tool_results(results)
        return self.turn

    def close(self) -> None:
        pass

    cancel = close


class LocalUsers:
    """Simulated users in this process, played by `policy` (e.g. ProceduralUser, or LatencyUser around it)."""

    def __init__(self, policy: UserPolicy, *, max_turns: int = 0) -> None:
        self.policy = policy
        self.max_turns = max_turns

    def open(self, task: pb.Task, *, seed: int, episode_id: str, avoid: Sequence[str] = ()) -> UserSession:
        conversation = Conversation(self.policy, task, seed=seed, max_turns=self.max_turns, episode_id=episode_id)
        return _LocalUser(conversation)


# -- over gRPC -----------------------------------------------------------------------------------------------


class _RemoteEnvironment:
    def __init__(self, pool: ReplicaPool, lease: Lease, session: Callable[[], RemoteSession], policy: str):
        self._pool, self._lease = pool, lease
        self.address = lease.address
        self.policy = policy
        try:
            with infra_errors("toolenv", self.address):
                self._session = session()
        except BaseException:
            pool.release(lease)
            raise
        self.tools = list(self._session.opened.tools)

    def call_many(self, calls: Sequence[pb.ToolCall]) -> list[pb.ToolResult]:
        with infra_errors("toolenv", self.address):
            return self._session.call_many(calls)

    def evaluate(self, messages: Sequence[pb.Message]) -> pb.Reward:
        with infra_errors("toolenv", self.address):
            return self._session.evaluate(messages)

    def close(self) -> None:
        try:
            with infra_errors("toolenv", self.address):
                self._session.close()
        except InfraError:
            pass  # the episode is over: a replica leaving now loses nothing
        finally:
            self._pool.release(self._lease)

    def cancel(self) -> None:
        self._session.cancel()
        self._pool.release(self._lease)


class RemoteEnvironments:
    """toolenv replicas at `target` (a list, a DNS name, or a live address source such as an EndpointSlice
    watch); each episode's session goes to the replica with the fewest open sessions, as one key of the one
    Sessions stream this manager keeps to that replica."""

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        auth_token: str | None = None,
        refresh_s: float = 2.0,
        session_timeout_s: float = TOOLENV_POLICY.stream_timeout_s,
    ) -> None:
        self.pool = ReplicaPool(discover(target), TOOLENV_POLICY, auth_token=auth_token, refresh_s=refresh_s)
        self.session_timeout_s = session_timeout_s
        self.streams = session_streams()
        self._policies: dict[str, str] = {}
        self._lock = threading.Lock()

    def _policy(self, domain: str, lease: Lease) -> str:
        with self._lock:
            if domain in self._policies:
                return self._policies[domain]
        with infra_errors("toolenv", lease.address):
            description = toolenv_pb2_grpc.ToolEnvStub(lease.channel).DescribeDomain(
                tpb.DescribeDomainRequest(domain=domain)
            )
        with self._lock:
            self._policies[domain] = description.policy
        return str(description.policy)

    def open(self, task: pb.Task, *, avoid: Sequence[str] = ()) -> EnvironmentSession:
        try:
            lease = self.pool.acquire(avoid)
        except (ValueError, OSError) as exc:  # no replica known right now (scaled to zero, DNS failure)
            raise InfraError("toolenv", "", str(exc)) from exc
        try:
            policy = self._policy(task.domain, lease)
        except BaseException:
            self.pool.release(lease)
            raise
        request = tpb.OpenSession(domain=task.domain, task=task, seed=task.provenance.seed)

        def session() -> RemoteSession:
            return RemoteSession(self.streams.open(lease, self.session_timeout_s), request)

        return _RemoteEnvironment(self.pool, lease, session, policy)

    def close(self) -> None:
        self.streams.close()
        self.pool.close()


class _RemoteUser:
    def __init__(self, conversation: RemoteConversation) -> None:
        self._conversation = conversation
        self.address = conversation.address
        self.turn = conversation.turn

    def agent_message(self, content: str) -> upb.UserTurn:
        with infra_errors("user_sim", self.address):
            self.turn = self._conversation.agent_message(content)
        return self.turn

    def tool_results(self, results: Sequence[pb.ToolResult]) -> upb.UserTurn:
        with infra_errors("user_sim", self.address):
            self.turn = self._conversation.tool_results(results)
        return self.turn

    def close(self) -> None:
        self._conversation.close()

    def cancel(self) -> None:
        self._conversation.cancel()


class RemoteUsers:
    """user_sim replicas at `target`; each conversation is pinned to the least-loaded replica, as one key of the
    one Conversations stream this manager keeps to that replica."""

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        auth_token: str | None = None,
        refresh_s: float = 2.0,
        timeout_s: float = USER_SIM_POLICY.stream_timeout_s,
        max_turns: int = 0,
        sampling: pb.SamplingParams | None = None,
    ) -> None:
        self.client = UserSimClient(
            discover(target), timeout_s=timeout_s, auth_token=auth_token, refresh_s=refresh_s, multiplexed=True
        )
        self.pool = self.client.pool
        self.max_turns = max_turns
        self.sampling = sampling

    def open(self, task: pb.Task, *, seed: int, episode_id: str, avoid: Sequence[str] = ()) -> UserSession:
        sampling = pb.SamplingParams()
        if self.sampling is not None:
            sampling.CopyFrom(self.sampling)
        sampling.seed = seed
        try:
            with infra_errors("user_sim"):
                conversation = self.client.conversation(
                    task, sampling=sampling, max_turns=self.max_turns, episode_id=episode_id, avoid=avoid
                )
        except (ValueError, OSError) as exc:
            raise InfraError("user_sim", "", str(exc)) from exc
        return _RemoteUser(conversation)

    def close(self) -> None:
        self.client.close()
