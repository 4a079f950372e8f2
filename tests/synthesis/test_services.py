"""Contract tests for the generator and validator services, each a real process on a loopback port, grounding
gold calls in a real toolenv process; then a whole `eigenloop synth` run against them.

Bad input tried: an unknown domain (Generate, GetPromptSet, Validate), a count of 0, an empty and an invalid
prompt set (Generate, SetPromptSet, Evolve), an unknown prompt set version, a task without an id.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import generator_pb2 as gpb
from eigenloop.contracts.v1 import validator_pb2 as vpb
from eigenloop.synthesis import prompts as P
from eigenloop.synthesis.clients import GeneratorClient, ValidatorClient
from eigenloop.synthesis.run import SynthesisConfig, run_synthesis
from tests.support import ServiceProcess
from tests.synthesis.helpers import evolved


@pytest.fixture(scope="module")
def generator_service(toolenv: ServiceProcess) -> Iterator[ServiceProcess]:
    with ServiceProcess("eigenloop_generator", ["--toolenv", toolenv.address]) as service:
        yield service


@pytest.fixture(scope="module")
def validator_service(generator_service: ServiceProcess) -> Iterator[ServiceProcess]:
    with ServiceProcess("eigenloop_validator", ["--generator", generator_service.address]) as service:
        yield service


@pytest.fixture()
def gen(generator_service: ServiceProcess) -> Iterator[GeneratorClient]:
    client = GeneratorClient(generator_service.address)
    yield client
    client.close()


@pytest.fixture()
def val(validator_service: ServiceProcess) -> Iterator[ValidatorClient]:
    client = ValidatorClient(validator_service.address)
    yield client
    client.close()


def _code(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return excinfo.value.code()  # type: ignore[no-any-return]


def test_generate_streams_grounded_tasks(gen: GeneratorClient, generator_service: ServiceProcess) -> None:
    out = list(gen.generate("toy", 3, 1, evolved("toy"), 1))
    assert len(out) == 3 and all(g.task.provenance.backend == "procedural" for g in out)
    assert generator_service.metric("eigenloop_generator_candidates_total", domain="toy") >= 3


def test_generate_refuses_bad_requests(gen: GeneratorClient) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        list(gen.generate("atlantis", 1, 0, evolved("toy"), 1))
    assert _code(unknown) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as none:
        list(gen.stub.Generate(gpb.GenerateTasksRequest(domain="toy", count=0)))
    assert _code(none) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as empty:
        list(gen.generate("toy", 1, 0, pb.PromptSet(domain="toy", version="x"), 1))
    assert _code(empty) == grpc.StatusCode.INVALID_ARGUMENT and "empty" in empty.value.details()


def test_prompt_sets_are_versioned(gen: GeneratorClient) -> None:
    default = gen.get_prompt_set("toy")
    assert default.version == P.default_prompt_set("toy").version
    better = evolved("toy")
    better.version = ""
    version = gen.set_prompt_set(better)
    assert gen.get_prompt_set("toy").version == version
    assert gen.get_prompt_set("toy", default.version) == default
    with pytest.raises(grpc.RpcError) as missing:
        gen.get_prompt_set("toy", "v9-nothere")
    assert _code(missing) == grpc.StatusCode.NOT_FOUND
    broken = evolved("toy")
    broken.agents[1].settings["apply_setup_actions"] = '"maybe"'
    with pytest.raises(grpc.RpcError) as invalid:
        gen.set_prompt_set(broken)
    assert _code(invalid) == grpc.StatusCode.INVALID_ARGUMENT and "apply_setup_actions" in invalid.value.details()


def test_validate_and_evolve(gen: GeneratorClient, val: ValidatorClient) -> None:
    current = P.default_prompt_set("toy")
    tasks = [g.task for g in gen.generate("toy", 6, 0, current, 1)]
    reports = list(val.validate(tasks, vpb.ValidationOptions(), run_id="t"))
    assert [r.task_id for r in reports] == [t.id for t in tasks]
    response = val.evolve(vpb.EvolveRequest(current=current, reports=reports, round=2, minibatch_size=4, run_id="t"))
    assert response.changed and response.failures
    assert val.history("toy").rounds[-1] == response
    with pytest.raises(grpc.RpcError) as bad:
        val.evolve(vpb.EvolveRequest(current=pb.PromptSet(domain="toy")))
    assert _code(bad) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as anonymous:
        list(val.validate([pb.Task(domain="toy")], vpb.ValidationOptions()))
    assert _code(anonymous) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_run_against_the_services(gen: GeneratorClient, val: ValidatorClient, tmp_path: Path) -> None:
    config = SynthesisConfig(domain="toy", rounds=2, per_round=5, seed=4, minibatch=4)
    summaries = run_synthesis(config, gen, val, tmp_path, P.default_prompt_set("toy"))
    assert [s.generated for s in summaries] == [5, 5]
    assert (tmp_path / "report.md").is_file()
