"""Where episodes get their policy turns: the inference engine in this process, or inference services over gRPC.

Both take prompt token ids and return sampled ids with logprobs and the policy version, so the rollout manager
runs the same whether embedded or distributed. A remote call that fails on one replica is tried once more on
another (a Generate is stateless, so nothing is lost); if that fails too the episode is infrastructure-failed.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import grpc

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import inference_pb2 as ipb
from eigenloop.contracts.v1 import inference_pb2_grpc
from eigenloop.rollout.discovery import discover
from eigenloop.rollout.failures import InfraError, TurnDeadlineError, infra_errors
from eigenloop.rpc.client import ServicePolicy
from eigenloop.rpc.mux import Multiplexers
from eigenloop.rpc.pool import Lease, ReplicaPool

if TYPE_CHECKING:  # the engine needs torch; the gRPC client must not
    from eigenloop.inference.engine import TransformersEngine

INFERENCE_POLICY = ServicePolicy(
    service="eigenloop.v1.Inference",
    idempotent_methods=("GetModelInfo",),
    streaming_methods=("Generate",),
    multiplexed_methods=("GenerateMany",),
    stream_timeout_s=600.0,
)

T = TypeVar("T")

_FINISH = {ipb.FINISH_REASON_STOP: "stop", ipb.FINISH_REASON_LENGTH: "length", ipb.FINISH_REASON_ABORT: "abort"}


@dataclass(frozen=True)
class Sample:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    """"stop" (a stop id or EOS, included in token_ids), "length" or "abort"."""
    policy_version: int


class PolicyClient(Protocol):
    max_model_len: int

    def generate(self, prompt_ids: Sequence[int], sampling: pb.SamplingParams, timeout_s: float) -> Sample:
        """Raises TurnDeadlineError past `timeout_s`, InfraError when the serving side failed."""
        ...


class LocalPolicy:
    """A TransformersEngine in this process; concurrent episodes are batched by the engine."""

    def __init__(self, engine: TransformersEngine) -> None:
        self.engine = engine
        self.max_model_len = engine.max_model_len

    def generate(self, prompt_ids: Sequence[int], sampling: pb.SamplingParams, timeout_s: float) -> Sample:
        future = self.engine.submit(list(prompt_ids), sampling)
        try:
            g = future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()  # a running row still finishes (batches are not preempted); its result is dropped
            raise TurnDeadlineError(f"no completion within {timeout_s:g}s") from None
        return Sample(g.token_ids, g.logprobs, g.finish_reason, g.policy_version)


class RemotePolicy:
    """Inference replicas at `target` (a list, or a DNS name / live address source): each generation goes to the
    least-busy replica, as one key of the one GenerateMany stream kept to that replica."""

    def __init__(
        self, target: str | Sequence[str], *, auth_token: str | None = None, refresh_s: float = 2.0, attempts: int = 2
    ) -> None:
        self.pool = ReplicaPool(discover(target), INFERENCE_POLICY, auth_token=auth_token, refresh_s=refresh_s)
        self.streams = Multiplexers(
            lambda channel: inference_pb2_grpc.InferenceStub(channel).GenerateMany,
            ipb.GenerateFrame,
            service="inference",
        )
        self.attempts = attempts
        self.info: ipb.ModelInfo = self._on_a_replica(self._model_info)
        self.max_model_len = self.info.max_model_len

    def generate(self, prompt_ids: Sequence[int], sampling: pb.SamplingParams, timeout_s: float) -> Sample:
        request = ipb.GenerateRequest(prompt_token_ids=prompt_ids, sampling=sampling)
        return self._on_a_replica(lambda lease: self._generate(lease, request, timeout_s))

    def _on_a_replica(self, call: Callable[[Lease], T]) -> T:
        """`call` on the least-busy replica; on an InfraError once more on another, up to `attempts` replicas."""
        failed: list[str] = []
        while True:
            try:
                lease = self.pool.acquire(failed)
            except (ValueError, OSError) as exc:  # no replica known right now (scaled to zero, DNS failure)
                raise InfraError("inference", "", str(exc)) from exc
            try:
                return call(lease)
            except InfraError:
                failed.append(lease.address)
                if len(failed) >= self.attempts:
                    raise
            finally:
                self.pool.release(lease)

    @staticmethod
    def _model_info(lease: Lease) -> ipb.ModelInfo:
        with infra_errors("inference", lease.address):
            info: ipb.ModelInfo = inference_pb2_grpc.InferenceStub(lease.channel).GetModelInfo(
                ipb.GetModelInfoRequest(), timeout=30
            )
        return info

    def _generate(self, lease: Lease, request: ipb.GenerateRequest, timeout_s: float) -> Sample:
        try:
            with infra_errors("inference", lease.address):
                response = self.streams.open(lease, timeout_s).call(request)
        except InfraError as exc:
            if isinstance(exc.__cause__, grpc.RpcError) and exc.__cause__.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TurnDeadlineError(f"no completion within {timeout_s:g}s from {lease.address}") from None
            raise
        if response.finish_reason == ipb.FINISH_REASON_UNSPECIFIED:
            raise InfraError("inference", lease.address, "the generation came back without a finish reason")
        finish = _FINISH[response.finish_reason]
        return Sample(list(response.token_ids), list(response.logprobs), finish, response.policy_version)

    def close(self) -> None:
        self.streams.close()
        self.pool.close()
