"""toolenv's gRPC servicer: each Session stream, or each key of a Sessions stream, owns one EnvSession, freed when
it ends."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from eigenloop.config import ServiceConfig
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import toolenv_pb2 as tpb
from eigenloop.contracts.v1 import toolenv_pb2_grpc
from eigenloop.domains import UnknownDomainError, available_domains, load_domain
from eigenloop.domains.base import Domain
from eigenloop.env.session import MAX_ARGUMENTS_BYTES, EnvSession, InitialStateError
from eigenloop.protocol import side_from_pb, tool_schema
from eigenloop.rpc.mux import serve_keys
from eigenloop.rpc.server import DrainAware, Registration, abort, episode_request_kind, run_service

log = logging.getLogger(__name__)

SESSIONS_ACTIVE = Gauge("eigenloop_toolenv_sessions_active", "Open sessions.")
SESSIONS = Counter("eigenloop_toolenv_sessions_total", "Sessions opened.", ["domain"])
TOOL_CALLS = Counter(
    "eigenloop_toolenv_tool_calls_total", "Tool calls by outcome.", ["domain", "tool", "side", "outcome"]
)
TOOL_SECONDS = Histogram(
    "eigenloop_toolenv_tool_seconds",
    "Time to execute one tool call.",
    ["domain"],
    buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1),
)
EVALUATIONS = Counter("eigenloop_toolenv_evaluations_total", "Checker evaluations.", ["domain", "result"])
REWARD = Histogram(
    "eigenloop_toolenv_reward", "Rewards returned.", ["domain"], buckets=(0.0, 0.25, 0.5, 0.75, 0.99, 1.0)
)


class ToolEnvConfig(ServiceConfig):
    model_config = SettingsConfigDict(env_prefix="EIGENLOOP_TOOLENV_")

    domains: list[str] = Field(default_factory=list, description="domains to serve; empty serves every installed one")
    max_arguments_bytes: int = Field(MAX_ARGUMENTS_BYTES, ge=2, description="larger tool arguments get an error result")
    max_calls_per_session: int = Field(2000, ge=1, description="beyond this a session fails with RESOURCE_EXHAUSTED")


class ToolEnvServicer(toolenv_pb2_grpc.ToolEnvServicer, DrainAware):
    def __init__(self, config: ToolEnvConfig) -> None:
        self.config = config
        self.domain_names = config.domains or available_domains()
        self.evaluations = ThreadPoolExecutor(config.workers, thread_name_prefix="toolenv-evaluate")
        for name in self.domain_names:
            load_domain(name)  # fail at start-up, not on the first episode

    def _domain(self, name: str, context: grpc.ServicerContext) -> Domain:
        if name not in self.domain_names:
            abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"unknown domain {name!r}; served here: {', '.join(self.domain_names)}",
            )
        try:
            return load_domain(name)
        except UnknownDomainError as exc:
            abort(context, grpc.StatusCode.NOT_FOUND, str(exc))

    def ListDomains(self, request: tpb.ListDomainsRequest, context: grpc.ServicerContext) -> tpb.ListDomainsResponse:
        summaries = []
        for name in self.domain_names:
            d = load_domain(name)
            summaries.append(
                tpb.DomainSummary(
                    name=d.name,
                    description=d.description,
                    agent_tool_count=len(d.agent_tools),
                    user_tool_count=len(d.user_tools),
                )
            )
        return tpb.ListDomainsResponse(domains=summaries)

    def DescribeDomain(
        self, request: tpb.DescribeDomainRequest, context: grpc.ServicerContext
    ) -> tpb.DomainDescription:
        d = self._domain(request.domain, context)
        return tpb.DomainDescription(
            name=d.name,
            description=d.description,
            policy=d.policy,
            tools=[tool_schema(t) for t in d.agent_tools],
            user_tools=[tool_schema(t) for t in d.user_tools],
            assertion_functions=sorted(d.assertions),
            initial_state_hash=d.initial_state().hash(),
        )

    def Session(
        self, requests: Iterator[tpb.SessionRequest], context: grpc.ServicerContext
    ) -> Iterator[tpb.SessionResponse]:
        session = _SessionHandler(self, context)
        try:
            for request in requests:
                yield session.handle(request)
        finally:
            session.close()

    def Sessions(
        self, frames: Iterator[tpb.SessionFrame], context: grpc.ServicerContext
    ) -> Iterator[tpb.SessionResultFrame]:
        # A tool call is microseconds of Python, less than a thread hand-off: inline. An evaluation may run a
        # sandboxed Python checker (a fresh interpreter, up to its timeout): on the pool, so the stream's other
        # sessions go on meanwhile.
        return serve_keys(
            frames,
            context,
            tpb.SessionResultFrame,
            lambda key: _SessionHandler(self, key),
            self.evaluations,
            slow=lambda request: request.WhichOneof("request") == "evaluate",
            draining=self.draining,
        )

    def _open(self, request: tpb.OpenSession, context: grpc.ServicerContext) -> EnvSession:
        domain_name = request.domain or request.task.domain
        if request.HasField("task") and request.task.domain and request.task.domain != domain_name:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"task {request.task.id!r} belongs to domain {request.task.domain!r}, not {domain_name!r}",
            )
        if not domain_name:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "open needs a domain (or a task with one)")
        domain = self._domain(domain_name, context)
        try:
            return EnvSession(
                domain,
                task=request.task if request.HasField("task") else None,
                initial_state=request.initial_state if request.HasField("initial_state") else None,
                seed=request.seed,
                max_arguments_bytes=self.config.max_arguments_bytes,
            )
        except InitialStateError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def _call(self, session: EnvSession, call: pb.ToolCall) -> pb.ToolResult:
        started = time.perf_counter()
        result = session.call(call)
        domain = session.domain.name
        TOOL_SECONDS.labels(domain).observe(time.perf_counter() - started)
        known = session.domain.tool(call.name) is not None
        side = side_from_pb(call.side).value
        outcome = pb.ToolErrorKind.Name(result.error_kind).removeprefix("TOOL_ERROR_KIND_").lower()
        TOOL_CALLS.labels(domain, call.name if known else "(unknown)", side, outcome).inc()
        return result

    def _evaluate(self, session: EnvSession, request: tpb.EvaluateRequest) -> pb.Reward:
        checker = request.checker if request.HasField("checker") else None
        domain = session.domain.name
        try:
            reward = session.evaluate(request.messages, checker)
        except ValueError as exc:
            EVALUATIONS.labels(domain, "checker_error").inc()
            return pb.Reward(value=0.0, checker_error=True, failure_reason=str(exc))
        EVALUATIONS.labels(
            domain, "checker_error" if reward.checker_error else "pass" if reward.value == 1.0 else "fail"
        ).inc()
        REWARD.labels(domain).observe(reward.value)
        return reward


class _SessionHandler:
    """One session's requests, in order: a Session stream's, or one key's of a Sessions stream."""

    def __init__(self, servicer: ToolEnvServicer, context: grpc.ServicerContext) -> None:
        self.servicer = servicer
        self.context = context
        self.session: EnvSession | None = None
        self.calls = 0
        SESSIONS_ACTIVE.inc()

    def handle(self, request: tpb.SessionRequest) -> tpb.SessionResponse:
        context, servicer = self.context, self.servicer
        kind = episode_request_kind(request, context, opened=self.session is not None, holds="an open session")
        if kind == "open":
            opened = self.session = servicer._open(request.open, context)
            SESSIONS.labels(opened.domain.name).inc()
            return tpb.SessionResponse(
                opened=tpb.SessionOpened(
                    session_id=opened.session_id,
                    domain=opened.domain.name,
                    state_hash=opened.state_hash(),
                    tools=[tool_schema(t) for t in opened.domain.agent_tools],
                    user_tools=[tool_schema(t) for t in opened.domain.user_tools],
                )
            )
        session = self.session
        assert session is not None
        if kind == "call":
            self.calls += 1
            if self.calls > servicer.config.max_calls_per_session:
                abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"session exceeded {servicer.config.max_calls_per_session} tool calls",
                )
            return tpb.SessionResponse(result=servicer._call(session, request.call))
        if kind == "evaluate":
            return tpb.SessionResponse(reward=servicer._evaluate(session, request.evaluate))
        return tpb.SessionResponse(
            state=tpb.StateSnapshot(state_json=session.state_json(), state_hash=session.state_hash())
        )

    def close(self) -> None:
        SESSIONS_ACTIVE.dec()


def registrations(config: ToolEnvConfig) -> list[Registration]:
    return [
        Registration("eigenloop.v1.ToolEnv", ToolEnvServicer(config), toolenv_pb2_grpc.add_ToolEnvServicer_to_server)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("toolenv", ToolEnvConfig, registrations, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
