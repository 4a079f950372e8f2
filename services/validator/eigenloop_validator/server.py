"""validator's gRPC servicer: the synthesis library's validation agents and evolution (ValidationCore)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

import grpc
from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from eigenloop.config import ServiceConfig
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import validator_pb2 as vpb
from eigenloop.contracts.v1 import validator_pb2_grpc
from eigenloop.domains import UnknownDomainError, load_domain
from eigenloop.launcher import address_env_var
from eigenloop.llm.factory import BackendConfig, make_backend
from eigenloop.rpc.server import Registration, abort, run_service
from eigenloop.synthesis.agents import AgentFailure
from eigenloop.synthesis.clients import GeneratorClient
from eigenloop.synthesis.generator import TaskGenerator
from eigenloop.synthesis.pipeline import Generation, ValidationCore
from eigenloop.synthesis.prompts import PromptSetError

REPORTS = Counter("eigenloop_validator_reports_total", "Candidates validated, by outcome.", ["domain", "outcome"])
FAILURES = Counter("eigenloop_validator_failures_total", "Failed verdicts, by category.", ["domain", "category"])


class ValidatorConfig(ServiceConfig):
    model_config = SettingsConfigDict(env_prefix="EIGENLOOP_VALIDATOR_")

    backend: BackendConfig = Field(
        BackendConfig(kind="procedural", model="procedural"), description="the backend that rewrites prompts in Evolve"
    )
    generator: str = Field(
        "",
        description="generator addresses for Evolve's minibatches; empty: EIGENLOOP_ADDRESSES_GENERATOR, "
        "else in-process",
    )


def generation(config: ValidatorConfig) -> Generation:
    addresses = config.generator or os.environ.get(address_env_var("generator"), "")
    return GeneratorClient(addresses) if addresses else TaskGenerator(make_backend(config.backend))


class ValidatorServicer(validator_pb2_grpc.ValidatorServicer):
    def __init__(self, config: ValidatorConfig) -> None:
        self.core = ValidationCore(make_backend(config.backend), generation(config))

    def Validate(self, request: vpb.ValidateRequest, context: grpc.ServicerContext) -> Iterator[pb.ValidationReport]:
        for task in [*request.accepted, *request.tasks]:
            if not task.id or not task.domain:
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, "every task needs an id and a domain")
            try:
                load_domain(task.domain)
            except UnknownDomainError as exc:
                abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        tasks = {t.id: t for t in request.tasks}
        for report in self.core.validate(request.tasks, request.options, request.run_id, request.accepted):
            domain = tasks[report.task_id].domain
            REPORTS.labels(domain, "accepted" if report.accepted else "rejected").inc()
            for verdict in report.verdicts:
                if not verdict.passed:
                    FAILURES.labels(domain, verdict.category).inc()
            yield report

    def Evolve(self, request: vpb.EvolveRequest, context: grpc.ServicerContext) -> vpb.EvolveResponse:
        try:
            return self.core.evolve(request)
        except PromptSetError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid prompt set: {exc}")
        except UnknownDomainError as exc:
            abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except AgentFailure as exc:
            abort(context, grpc.StatusCode.UNAVAILABLE, f"the prompt rewriter failed: {exc}")

    def GetHistory(self, request: vpb.GetHistoryRequest, context: grpc.ServicerContext) -> vpb.EvolutionHistory:
        return self.core.history(request.domain)


def registrations(config: ValidatorConfig) -> list[Registration]:
    return [
        Registration(
            "eigenloop.v1.Validator", ValidatorServicer(config), validator_pb2_grpc.add_ValidatorServicer_to_server
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("validator", ValidatorConfig, registrations, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
