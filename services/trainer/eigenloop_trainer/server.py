"""trainer's gRPC servicer: each StartRun trains in a background thread; GetRun/WatchRun report, CancelRun stops it;
Evaluate plays k episodes per task with the rollout manager and scores them.

The stages are the library's (eigenloop.training): the service validates the YAML config up front (INVALID_ARGUMENT
names the bad key), runs it under `<runs_dir>/<run_id>` unless the config names a run_dir, and streams every step's
metrics to watchers. Cancellation is cooperative: the run stops after its current step; its checkpoints stay.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from eigenloop.config import ServiceConfig
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import trainer_pb2 as tpb
from eigenloop.contracts.v1 import trainer_pb2_grpc
from eigenloop.rpc.server import Registration, abort, run_service
from eigenloop.training.config import STAGES, ConfigError, TrainConfig, parse_config

log = logging.getLogger(__name__)

_STAGES = {tpb.STAGE_SFT: "sft", tpb.STAGE_USER_SFT: "user-sft", tpb.STAGE_GRPO: "grpo"}
_FINISHED = (tpb.RUN_STATE_SUCCEEDED, tpb.RUN_STATE_FAILED, tpb.RUN_STATE_CANCELLED)


class TrainerConfig(ServiceConfig):
    model_config = SettingsConfigDict(env_prefix="EIGENLOOP_TRAINER_")

    runs_dir: Path = Field(Path(".eigenloop/runs"), description="where runs live when their config names no run_dir")
    max_active_runs: int = Field(1, ge=1, description="runs training at once; more StartRuns get RESOURCE_EXHAUSTED")
    toolenv: str | None = Field(None, description="toolenv replicas Evaluate plays against; unset: in-process")
    user_sim: str | None = Field(None, description="user_sim replicas for Evaluate; unset: procedural users here")
    eval_max_turns: int = Field(16, ge=1, description="policy turns per Evaluate episode")


class RunCancelled(Exception):
    pass


@dataclass
class Run:
    run_id: str
    stage: int
    config: TrainConfig
    state: int = tpb.RUN_STATE_PENDING
    step: int = 0
    message: str = ""
    model_dir: str = ""
    metrics: list[tpb.TrainingMetrics] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def status(self) -> tpb.RunStatus:
        with self.changed:
            return tpb.RunStatus(
                run_id=self.run_id,
                stage=self.stage,  # type: ignore[arg-type]
                state=self.state,  # type: ignore[arg-type]
                step=self.step,
                total_steps=self.config.steps,
                policy_version=pb.PolicyVersion(version=self.step, checkpoint=self.model_dir),
                checkpoint_dir=str(self.config.run_dir / "checkpoints"),
                message=self.message,
            )

    def update(self, **changes: Any) -> None:
        with self.changed:
            for key, value in changes.items():
                setattr(self, key, value)
            self.changed.notify_all()


def _now() -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def _run(self, run_id: str, context: grpc.ServicerContext) -> Run:
        with self._lock:
            run = self.runs.get(run_id)
        if run is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"no run {run_id!r} on this trainer")
        return run

    def StartRun(self, request: tpb.StartRunRequest, context: grpc.ServicerContext) -> tpb.RunStatus:
        stage = _STAGES.get(request.stage)
        if stage is None:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "stage must be STAGE_SFT, STAGE_USER_SFT or STAGE_GRPO")
        run_id = request.run_id or f"{stage}-{uuid.uuid4().hex[:8]}"
        try:
            raw = yaml.safe_load(request.config_yaml) or {}
            if isinstance(raw, dict):
                raw.setdefault("run_dir", str(self.config.runs_dir / run_id))
            config = parse_config(STAGES[stage], raw, source="config_yaml")
        except yaml.YAMLError as err:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"config_yaml is not valid YAML: {err}")
        except ConfigError as err:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        with self._lock:
            if run_id in self.runs and self.runs[run_id].state not in _FINISHED:
                abort(context, grpc.StatusCode.ALREADY_EXISTS, f"run {run_id!r} is still active")
            active = sum(r.state not in _FINISHED for r in self.runs.values())
            if active >= self.config.max_active_runs:
                abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, f"{active} run(s) active; the limit is reached")
            run = Run(run_id, request.stage, config)
            self.runs[run_id] = run
        threading.Thread(
            target=self._train, args=(run, stage, request.resume), name=f"run-{run_id}", daemon=True
        ).start()
        return run.status()

    def _train(self, run: Run, stage: str, resume: bool) -> None:
        # Imported here: torch loads on the first run, not when the server starts.
        from eigenloop.training.grpo import run_grpo
        from eigenloop.training.sft import run_sft
        from eigenloop.training.user_sft import run_user_sft

        def on_step(step: int, total: int, values: dict[str, float]) -> None:
            metrics = tpb.TrainingMetrics(run_id=run.run_id, step=step, values=values, time=_now())
            with run.changed:
                run.step = step
                run.metrics.append(metrics)
                run.changed.notify_all()
            if run.cancel.is_set():
                raise RunCancelled

        run.update(state=tpb.RUN_STATE_RUNNING)
        try:
            config: Any = run.config
            if stage == "grpo":
                result: Any = run_grpo(config, run_id=run.run_id, resume=resume, on_step=on_step)
            elif stage == "user-sft":
                result = run_user_sft(config, run_id=run.run_id, resume=resume, on_step=on_step)
            else:
                result = run_sft(config, run_id=run.run_id, resume=resume, on_step=on_step)
        except RunCancelled:
            run.update(state=tpb.RUN_STATE_CANCELLED, message=f"cancelled after step {run.step}; checkpoints kept")
        except Exception as err:
            log.exception("run failed", extra={"run_id": run.run_id})
            run.update(state=tpb.RUN_STATE_FAILED, message=f"{type(err).__name__}: {err}")
        else:
            run.update(state=tpb.RUN_STATE_SUCCEEDED, model_dir=str(result.model_dir), message=str(result.model_dir))

    def GetRun(self, request: tpb.GetRunRequest, context: grpc.ServicerContext) -> tpb.RunStatus:
        return self._run(request.run_id, context).status()

    def WatchRun(self, request: tpb.GetRunRequest, context: grpc.ServicerContext) -> Iterator[tpb.TrainingMetrics]:
        run = self._run(request.run_id, context)
        sent = 0
        while context.is_active():
            with run.changed:
                while sent == len(run.metrics) and run.state not in _FINISHED and context.is_active():
                    run.changed.wait(timeout=1.0)
                pending, finished = run.metrics[sent:], run.state in _FINISHED
            yield from pending
            sent += len(pending)
            if finished and sent == len(run.metrics):
                return

    def CancelRun(self, request: tpb.GetRunRequest, context: grpc.ServicerContext) -> tpb.RunStatus:
        run = self._run(request.run_id, context)
        run.cancel.set()
        return run.status()

    def Evaluate(self, request: tpb.EvaluateModelRequest, context: grpc.ServicerContext) -> tpb.EvaluationReport:
        """k episodes per task with the model at model_path (an in-process engine), scored as pass@1 / pass^k."""
        from eigenloop.rollout.episode import EpisodeConfig
        from eigenloop.rollout.evaluation import score_groups
        from eigenloop.rollout.factory import rollout_manager
        from eigenloop.rollout.manager import RolloutConfig

        if not request.tasks:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "no tasks to evaluate")
        if not Path(request.model_path).is_dir():
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"model_path {request.model_path!r}: no such directory")
        k = request.k or 1
        sampling = request.sampling
        config = RolloutConfig(
            group_size=k,
            seed=request.seed,
            episode=EpisodeConfig(
                max_turns=self.config.eval_max_turns,
                max_new_tokens=sampling.max_new_tokens or 256,
                temperature=sampling.temperature,
                top_p=sampling.top_p or 1.0,
                top_k=sampling.top_k,
            ),
        )
        with rollout_manager(
            Path(request.model_path), config, toolenv=self.config.toolenv, user_sim=self.config.user_sim
        ) as manager:
            groups = list(manager.rollout(list(request.tasks)))
        report = score_groups(groups, k)
        return tpb.EvaluationReport(
            domains=[
                tpb.DomainScore(
                    domain=d.domain,
                    pass_at_1=d.pass_at_1 or 0.0,
                    pass_hat_k=d.pass_hat_k or 0.0,
                    k=k,
                    tasks=d.tasks,
                    episodes=d.episodes,
                    infra_failed=d.infra_failed,
                    simulator_invalid=d.simulator_invalid,
                    failures=d.failures,
                )
                for d in report.domains
            ],
            trajectories=[t for g in groups for t in g.trajectories],
        )


def registrations(config: TrainerConfig) -> list[Registration]:
    servicer: Any = TrainerServicer(config)
    return [Registration("eigenloop.v1.Trainer", servicer, trainer_pb2_grpc.add_TrainerServicer_to_server)]


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("trainer", TrainerConfig, registrations, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
