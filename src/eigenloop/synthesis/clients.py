"""gRPC clients of the generator and validator services, with the same methods as the embedded objects."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import generator_pb2 as gpb
from eigenloop.contracts.v1 import generator_pb2_grpc, validator_pb2_grpc
from eigenloop.contracts.v1 import validator_pb2 as vpb
from eigenloop.rpc.client import ServicePolicy, connect

GENERATOR_POLICY = ServicePolicy(
    service="eigenloop.v1.Generator",
    idempotent_methods=("GetPromptSet",),
    streaming_methods=("Generate",),
    unary_timeout_s=10.0,
    stream_timeout_s=3600.0,
)
VALIDATOR_POLICY = ServicePolicy(
    service="eigenloop.v1.Validator",
    idempotent_methods=("GetHistory",),
    streaming_methods=("Validate",),
    # Evolve generates and validates a minibatch per candidate: minutes, not seconds.
    unary_timeout_s=1800.0,
    stream_timeout_s=3600.0,
)


class GeneratorClient:
    def __init__(self, addresses: str | Sequence[str], *, auth_token: str | None = None) -> None:
        self.channel = connect(addresses, GENERATOR_POLICY, auth_token=auth_token)
        self.stub = generator_pb2_grpc.GeneratorStub(self.channel)

    def generate(
        self, domain: str, count: int, seed: int, prompt_set: pb.PromptSet, round_: int
    ) -> Iterator[gpb.GeneratedTask]:
        request = gpb.GenerateTasksRequest(domain=domain, count=count, seed=seed, prompt_set=prompt_set, round=round_)
        yield from self.stub.Generate(request)

    def get_prompt_set(self, domain: str, version: str = "") -> pb.PromptSet:
        prompt_set: pb.PromptSet = self.stub.GetPromptSet(gpb.GetPromptSetRequest(domain=domain, version=version))
        return prompt_set

    def set_prompt_set(self, prompt_set: pb.PromptSet) -> str:
        return str(self.stub.SetPromptSet(gpb.SetPromptSetRequest(prompt_set=prompt_set)).version)

    def close(self) -> None:
        self.channel.close()


class ValidatorClient:
    def __init__(self, addresses: str | Sequence[str], *, auth_token: str | None = None) -> None:
        self.channel = connect(addresses, VALIDATOR_POLICY, auth_token=auth_token)
        self.stub = validator_pb2_grpc.ValidatorStub(self.channel)

    def validate(
        self,
        tasks: Sequence[pb.Task],
        options: vpb.ValidationOptions,
        run_id: str = "",
        accepted: Iterable[pb.Task] = (),
    ) -> Iterator[pb.ValidationReport]:
        request = vpb.ValidateRequest(tasks=tasks, options=options, run_id=run_id, accepted=list(accepted))
        yield from self.stub.Validate(request)

    def evolve(self, request: vpb.EvolveRequest) -> vpb.EvolveResponse:
        response: vpb.EvolveResponse = self.stub.Evolve(request)
        return response

    def history(self, domain: str) -> vpb.EvolutionHistory:
        history: vpb.EvolutionHistory = self.stub.GetHistory(vpb.GetHistoryRequest(domain=domain))
        return history

    def close(self) -> None:
        self.channel.close()
