"""user_sim's gRPC servicer: each Converse stream, or each key of a Conversations stream, owns one Conversation,
freed when it ends."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import grpc
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from eigenloop.config import ServiceConfig
from eigenloop.contracts.v1 import user_sim_pb2 as upb
from eigenloop.contracts.v1 import user_sim_pb2_grpc
from eigenloop.domains import UnknownDomainError, load_domain
from eigenloop.llm.factory import BackendConfig, make_backend
from eigenloop.rpc.mux import serve_keys
from eigenloop.rpc.server import DrainAware, Registration, abort, episode_request_kind, run_service
from eigenloop.usersim import (
    Conversation,
    ConversationError,
    LatencyUser,
    UserPolicy,
    UserPrompt,
    UserSimError,
    make_policy,
)

ACTIVE = Gauge("eigenloop_user_sim_conversations_active", "Open conversations.")
CONVERSATIONS = Counter("eigenloop_user_sim_conversations_total", "Conversations opened.", ["domain"])
TURN_SECONDS = Histogram(
    "eigenloop_user_sim_turn_seconds",
    "Time to produce one user turn.",
    ["policy"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STOPS = Counter("eigenloop_user_sim_stops_total", "Conversations the user ended, by reason.", ["reason"])
INVALID = Counter("eigenloop_user_sim_invalid_turns_total", "User turns that broke the simulator's rules.", ["policy"])


class UserSimConfig(ServiceConfig):
    model_config = SettingsConfigDict(env_prefix="EIGENLOOP_USER_SIM_")

    policy: Literal["procedural", "llm"] = Field("procedural", description="who plays the user")
    llm: BackendConfig | None = Field(None, description="the chat backend when policy is 'llm'")
    llm_prompt: UserPrompt = Field(
        "full", description="the llm user's system prompt: 'full' (every rule in prose) or 'compact' (the scenario)"
    )
    turn_latency_s: float = Field(0.0, ge=0, description="added to every turn, to emulate a remote LLM")
    max_turns: int = Field(30, ge=1, description="default turn limit when the caller sets none")
    max_turns_limit: int = Field(
        200, ge=1, description="largest turn limit a caller may ask for; above it, RESOURCE_EXHAUSTED"
    )
    max_concurrent_turns: int = Field(
        64, ge=1, description="user turns computed at once (the backend's capacity); further turns wait their turn"
    )


def build_policy(config: UserSimConfig) -> UserPolicy:
    if config.policy == "llm":
        if config.llm is None:
            raise ValueError("policy 'llm' needs an llm backend config (llm.kind, llm.model, ...)")
        policy = make_policy("llm", backend=make_backend(config.llm), prompt=config.llm_prompt)
    else:
        policy = make_policy("procedural")
    return LatencyUser(policy, config.turn_latency_s) if config.turn_latency_s else policy


class UserSimServicer(user_sim_pb2_grpc.UserSimServicer, DrainAware):
    def __init__(self, config: UserSimConfig) -> None:
        self.config = config
        self.policy = build_policy(config)
        self.replica_id = config.replica_id or f"user_sim-{uuid.uuid4().hex[:8]}"
        self.slots = threading.BoundedSemaphore(config.max_concurrent_turns)
        self.turns = ThreadPoolExecutor(config.max_concurrent_turns, thread_name_prefix="user_sim-turn")

    def Converse(
        self, requests: Iterator[upb.ConverseRequest], context: grpc.ServicerContext
    ) -> Iterator[upb.ConverseResponse]:
        conversation = _ConversationHandler(self, context)
        try:
            for request in requests:
                yield conversation.handle(request)
        finally:
            conversation.close()

    def Conversations(
        self, frames: Iterator[upb.ConverseFrame], context: grpc.ServicerContext
    ) -> Iterator[upb.ConverseResultFrame]:
        # A turn may take as long as the user model does: turns run on the pool, answered as each finishes.
        return serve_keys(
            frames,
            context,
            upb.ConverseResultFrame,
            lambda key: _ConversationHandler(self, key),
            self.turns,
            draining=self.draining,
        )

    def _turn(
        self, conversation: Conversation, request: upb.ConverseRequest, context: grpc.ServicerContext
    ) -> upb.UserTurn:
        started = time.perf_counter()
        try:
            with self.slots:  # the backend's capacity: beyond it, turns queue here
                kind = request.WhichOneof("request")
                if kind == "open":
                    turn = conversation.open()
                elif kind == "agent_message":
                    turn = conversation.agent_message(request.agent_message.content)
                else:
                    turn = conversation.tool_results(list(request.tool_results.results))
        except ConversationError as exc:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except UserSimError as exc:
            # The backend failed (after its retries): the episode is infrastructure-failed, not scored.
            abort(context, grpc.StatusCode.UNAVAILABLE, f"user backend failed: {exc}")
        TURN_SECONDS.labels(self.policy.name).observe(time.perf_counter() - started)
        if not turn.validity.valid:
            INVALID.labels(self.policy.name).inc()
        if turn.stop:
            STOPS.labels(upb.StopReason.Name(turn.stop_reason).removeprefix("STOP_REASON_").lower()).inc()
        return turn

    def _open(self, request: upb.OpenConversation, context: grpc.ServicerContext) -> Conversation:
        task = request.task
        if not task.domain:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "open needs a task with a domain")
        try:
            domain = load_domain(task.domain)
        except UnknownDomainError as exc:
            abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        if request.max_turns < 0:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"max_turns must be >= 0 (0: default), got {request.max_turns}",
            )
        if request.max_turns > self.config.max_turns_limit:
            abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"max_turns {request.max_turns} is over this server's max_turns_limit {self.config.max_turns_limit}",
            )
        CONVERSATIONS.labels(domain.name).inc()
        opening = upb.OpenConversation()
        opening.CopyFrom(request)
        opening.max_turns = request.max_turns or self.config.max_turns
        return Conversation.from_open(self.policy, opening, domain=domain)


class _ConversationHandler:
    """One conversation's requests, in order: a Converse stream's, or one key's of a Conversations stream."""

    def __init__(self, servicer: UserSimServicer, context: grpc.ServicerContext) -> None:
        self.servicer = servicer
        self.context = context
        self.conversation: Conversation | None = None
        ACTIVE.inc()

    def handle(self, request: upb.ConverseRequest) -> upb.ConverseResponse:
        servicer, context = self.servicer, self.context
        kind = episode_request_kind(request, context, opened=self.conversation is not None, holds="a conversation")
        if kind == "open":
            self.conversation = servicer._open(request.open, context)
        assert self.conversation is not None
        turn = servicer._turn(self.conversation, request, context)
        return upb.ConverseResponse(turn=turn, replica_id=servicer.replica_id)

    def close(self) -> None:
        ACTIVE.dec()


def registrations(config: UserSimConfig) -> list[Registration]:
    return [
        Registration("eigenloop.v1.UserSim", UserSimServicer(config), user_sim_pb2_grpc.add_UserSimServicer_to_server)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("user_sim", UserSimConfig, registrations, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
