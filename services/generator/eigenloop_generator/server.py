"""generator's gRPC servicer: the synthesis library's TaskGenerator, with the current PromptSet per domain."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Sequence

import grpc
from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from eigenloop.config import ServiceConfig
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import generator_pb2 as gpb
from eigenloop.contracts.v1 import generator_pb2_grpc
from eigenloop.domains import UnknownDomainError, load_domain
from eigenloop.env.remote import ToolEnvClient
from eigenloop.launcher import address_env_var
from eigenloop.llm.factory import BackendConfig, make_backend
from eigenloop.rpc.server import Registration, abort, run_service
from eigenloop.synthesis.agents import RetryPolicy
from eigenloop.synthesis.generator import TaskGenerator
from eigenloop.synthesis.grounding import RemoteSessions, Sessions, local_sessions
from eigenloop.synthesis.prompts import PromptSetError, check_prompt_set, content_version, default_prompt_set

CANDIDATES = Counter(
    "eigenloop_generator_candidates_total", "Candidate tasks generated, by outcome.", ["domain", "outcome"]
)
MAX_COUNT = 10_000


class GeneratorConfig(ServiceConfig):
    model_config = SettingsConfigDict(env_prefix="EIGENLOOP_GENERATOR_")

    backend: BackendConfig = Field(
        BackendConfig(kind="procedural", model="procedural"), description="the LLM backend the agents ask"
    )
    toolenv: str = Field(
        "",
        description="toolenv addresses to ground gold calls in; empty: EIGENLOOP_ADDRESSES_TOOLENV, else in-process",
    )
    attempts: int = Field(3, ge=1, description="tries per agent call (backend errors, timeouts, unparsable answers)")
    backoff_s: float = Field(0.2, ge=0, description="first retry delay, doubled on each further retry")


def grounding(config: GeneratorConfig) -> Sessions:
    addresses = config.toolenv or os.environ.get(address_env_var("toolenv"), "")
    return RemoteSessions(ToolEnvClient(addresses)) if addresses else local_sessions


class GeneratorServicer(generator_pb2_grpc.GeneratorServicer):
    def __init__(self, config: GeneratorConfig) -> None:
        retry = RetryPolicy(attempts=config.attempts, backoff_s=config.backoff_s)
        self.generator = TaskGenerator(make_backend(config.backend), grounding(config), retry)
        self._lock = threading.Lock()
        # domain -> version -> PromptSet; the current version per domain.
        self._sets: dict[str, dict[str, pb.PromptSet]] = {}
        self._current: dict[str, str] = {}

    def _domain(self, name: str, context: grpc.ServicerContext) -> str:
        try:
            return load_domain(name).name
        except UnknownDomainError as exc:
            abort(context, grpc.StatusCode.NOT_FOUND, str(exc))

    def _current_set(self, domain: str) -> pb.PromptSet:
        with self._lock:
            if domain not in self._current:
                initial = default_prompt_set(domain)
                self._sets.setdefault(domain, {})[initial.version] = initial
                self._current[domain] = initial.version
            return self._sets[domain][self._current[domain]]

    def Generate(self, request: gpb.GenerateTasksRequest, context: grpc.ServicerContext) -> Iterator[gpb.GeneratedTask]:
        domain = self._domain(request.domain, context)
        if not 0 < request.count <= MAX_COUNT:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"count must be in 1..{MAX_COUNT}, got {request.count}")
        prompt_set = request.prompt_set if request.HasField("prompt_set") else self._current_set(domain)
        try:
            check_prompt_set(prompt_set)
        except PromptSetError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid prompt set: {exc}")
        for generated in self.generator.generate(domain, request.count, request.seed, prompt_set, request.round):
            if not context.is_active():
                return
            CANDIDATES.labels(domain, "written" if generated.HasField("task") else "failed").inc()
            yield generated

    def GetPromptSet(self, request: gpb.GetPromptSetRequest, context: grpc.ServicerContext) -> pb.PromptSet:
        domain = self._domain(request.domain, context)
        current = self._current_set(domain)
        if not request.version:
            return current
        with self._lock:
            found = self._sets[domain].get(request.version)
        if found is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"{domain} has no prompt set version {request.version!r}")
        return found

    def SetPromptSet(self, request: gpb.SetPromptSetRequest, context: grpc.ServicerContext) -> gpb.SetPromptSetResponse:
        prompt_set = pb.PromptSet()
        prompt_set.CopyFrom(request.prompt_set)
        prompt_set.domain = self._domain(prompt_set.domain, context)
        try:
            check_prompt_set(prompt_set)
        except PromptSetError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid prompt set: {exc}")
        prompt_set.version = prompt_set.version or content_version(prompt_set)
        self._current_set(prompt_set.domain)  # the default stays reachable by its version
        with self._lock:
            self._sets[prompt_set.domain][prompt_set.version] = prompt_set
            self._current[prompt_set.domain] = prompt_set.version
        return gpb.SetPromptSetResponse(version=prompt_set.version)


def registrations(config: GeneratorConfig) -> list[Registration]:
    return [
        Registration(
            "eigenloop.v1.Generator", GeneratorServicer(config), generator_pb2_grpc.add_GeneratorServicer_to_server
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("generator", GeneratorConfig, registrations, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
