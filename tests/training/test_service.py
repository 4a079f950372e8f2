from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import trainer_pb2 as tpb
from eigenloop.contracts.v1 import trainer_pb2_grpc
from eigenloop.domains import sample_tasks
from eigenloop_trainer.server import TrainerConfig, TrainerServicer
from tests.training.helpers import sft_config


@pytest.fixture()
def stub(tmp_path: Path) -> Iterator[trainer_pb2_grpc.TrainerStub]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trainer_pb2_grpc.add_TrainerServicer_to_server(
        TrainerServicer(TrainerConfig.model_validate({"runs_dir": tmp_path / "runs"})), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield trainer_pb2_grpc.TrainerStub(channel)
    finally:
        channel.close()
        server.stop(grace=None)


def test_a_run_streams_its_metrics_and_succeeds(stub: trainer_pb2_grpc.TrainerStub, tmp_path: Path) -> None:
    raw = sft_config(tmp_path, steps=3)
    del raw["run_dir"]  # the service puts it under its runs_dir
    status = stub.StartRun(tpb.StartRunRequest(stage=tpb.STAGE_SFT, config_yaml=yaml.safe_dump(raw), run_id="r1"))
    assert status.run_id == "r1" and status.total_steps == 3
    steps = [m.step for m in stub.WatchRun(tpb.GetRunRequest(run_id="r1"), timeout=120)]
    assert steps == [1, 2, 3]
    final = stub.GetRun(tpb.GetRunRequest(run_id="r1"))
    assert final.state == tpb.RUN_STATE_SUCCEEDED, final.message
    assert (tmp_path / "runs" / "r1" / "model" / "model.safetensors").is_file()


def test_bad_config_is_invalid_argument_naming_the_key(stub: trainer_pb2_grpc.TrainerStub, tmp_path: Path) -> None:
    raw = {**sft_config(tmp_path), "lr": 0.1}
    with pytest.raises(grpc.RpcError) as err:
        stub.StartRun(tpb.StartRunRequest(stage=tpb.STAGE_SFT, config_yaml=yaml.safe_dump(raw)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lr: unknown key" in str(err.value.details())


def test_unknown_run_is_not_found(stub: trainer_pb2_grpc.TrainerStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.GetRun(tpb.GetRunRequest(run_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_evaluate_scores_k_samples_per_task(stub: trainer_pb2_grpc.TrainerStub, sft_model: Path) -> None:
    tasks = sample_tasks("toy")[:2]
    request = tpb.EvaluateModelRequest(
        model_path=str(sft_model), tasks=tasks, k=2, sampling=pb.SamplingParams(temperature=1.0, max_new_tokens=8)
    )
    report = stub.Evaluate(request, timeout=300)
    assert [d.domain for d in report.domains] == ["toy"]
    assert report.domains[0].tasks == 2 and report.domains[0].episodes == 4
    assert len(report.trajectories) == 4
    scored = (pb.EPISODE_STATUS_COMPLETED, pb.EPISODE_STATUS_TRUNCATED)
    failed = sum(t.reward.value < 1 for t in report.trajectories if t.status in scored)
    assert sum(report.domains[0].failures.values()) == failed
    with pytest.raises(grpc.RpcError) as err:
        stub.Evaluate(tpb.EvaluateModelRequest(model_path="/nope", tasks=tasks))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
