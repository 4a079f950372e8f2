"""inference's gRPC servicer (Generate, UpdateWeights, GetModelInfo) plus the OpenAI-compatible HTTP endpoint."""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from eigenloop.config import ServiceConfig
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import inference_pb2 as ipb
from eigenloop.contracts.v1 import inference_pb2_grpc
from eigenloop.inference.base import (
    EngineClosedError,
    Generation,
    InferenceEngine,
    InvalidRequestError,
    StaleVersionError,
    WeightMismatchError,
)
from eigenloop.inference.openai_http import ChatFrontend, OpenAIHTTPServer
from eigenloop.inference.vllm_engine import VLLM_INSTALL_HINT, VLLMEngine, check_engine_args, vllm_installed
from eigenloop.rpc.mux import KeyAbortedError, serve_keys
from eigenloop.rpc.server import DrainAware, Registration, abort, run_service

log = logging.getLogger(__name__)

_FINISH = {
    "stop": ipb.FINISH_REASON_STOP,
    "length": ipb.FINISH_REASON_LENGTH,
    "abort": ipb.FINISH_REASON_ABORT,
}


class InferenceConfig(ServiceConfig):
    model_config = SettingsConfigDict(env_prefix="EIGENLOOP_INFERENCE_")

    model: Path | None = Field(
        None, description="local model directory (tokenizer + causal LM, loaded offline); required"
    )
    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="engine: transformers (CPU or GPU, batched here) or vllm (GPU only, the vllm extra)"
    )
    device: str = Field("cpu", description="torch device, e.g. cpu, cuda, cuda:1 (transformers)")
    max_batch_size: int = Field(8, ge=1, description="most requests decoded together (transformers)")
    batch_window_ms: float = Field(
        5.0, ge=0, description="how long the first waiting request waits for company (transformers)"
    )
    prefix_cache_entries: int = Field(
        256,
        ge=0,
        description="finished sequences whose KV states are kept for continuations (transformers; 0: no prefix cache)",
    )
    max_model_len: int = Field(0, ge=0, description="context length (prompt + completion); 0: the model's own")
    torch_threads: int = Field(
        0, ge=0, description="CPU threads for torch; 0: torch's default. 1 when other processes share few cores"
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="share of GPU memory vLLM takes for weights, activations and KV cache (vllm)"
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs the model is sharded over (vllm)")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="weight and activation dtype; auto: vLLM's choice from the checkpoint's (vllm)"
    )
    vllm_engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description='further vllm.LLM engine arguments, a JSON object, e.g. {"max_num_seqs": 256} (vllm)',
    )
    weights_dir: Path | None = Field(
        None, description="where an update is staged for vLLM's workers to read; default: the temp dir (vllm)"
    )
    http_host: str = Field("", description="address the OpenAI HTTP endpoint binds; empty: same as host")
    http_port: int = Field(0, ge=-1, le=65535, description="OpenAI HTTP port; 0 picks a free one (logged), -1 off")
    http_max_concurrent: int = Field(64, ge=1, description="chat completions in flight; beyond: HTTP 503")
    max_weight_bytes: int = Field(64 * 1024**3, ge=1, description="largest UpdateWeights payload accepted")

    @model_validator(mode="after")
    def _model_required(self) -> InferenceConfig:
        if self.model is None:
            raise ValueError(
                "no model configured: pass --model DIR or set EIGENLOOP_INFERENCE_MODEL to a local model directory"
            )
        if not self.model.is_dir():
            raise ValueError(f"model directory not found: {self.model}")
        return self

    @model_validator(mode="after")
    def _vllm_usable(self) -> InferenceConfig:
        # Checked here so that a server that cannot start says why and exits 2, before loading anything.
        if self.backend == "vllm":
            if not vllm_installed():
                raise ValueError(f"backend vllm: vLLM is not installed; {VLLM_INSTALL_HINT}")
            check_engine_args(self.vllm_engine_args)
        return self


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


class InferenceServicer(inference_pb2_grpc.InferenceServicer, DrainAware):
    def __init__(self, engine: InferenceEngine, max_weight_bytes: int) -> None:
        self.engine = engine
        self.max_weight_bytes = max_weight_bytes

    def _policy_version(self) -> pb.PolicyVersion:
        info = self.engine.info()
        return pb.PolicyVersion(
            version=info.version, checkpoint=info.checkpoint, created_at=_timestamp(info.updated_at)
        )

    def Generate(self, request: ipb.GenerateRequest, context: grpc.ServicerContext) -> Iterator[ipb.GenerateResponse]:
        try:
            yield self.generation(request).result()
        except KeyAbortedError as exc:
            abort(context, exc.code, exc.details)

    def GenerateMany(
        self, frames: Iterator[ipb.GenerateFrame], context: grpc.ServicerContext
    ) -> Iterator[ipb.GenerateResultFrame]:
        # Each key's generation is submitted to the engine inline and answered when it resolves: no thread waits.
        return serve_keys(
            frames, context, ipb.GenerateResultFrame, lambda key: self, draining=self.draining, one_shot=True
        )

    def handle(self, request: ipb.GenerateRequest) -> Future[ipb.GenerateResponse]:
        """A GenerateMany key (the servicer is every key's handler: a generation holds no state)."""
        return self.generation(request)

    def close(self) -> None:
        pass

    def generation(self, request: ipb.GenerateRequest) -> Future[ipb.GenerateResponse]:
        """The engine's completion of `request` as a response; its errors as KeyAbortedError with their status."""
        try:
            submitted = self.engine.submit(list(request.prompt_token_ids), request.sampling)
        except InvalidRequestError as exc:
            raise KeyAbortedError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except EngineClosedError as exc:
            raise KeyAbortedError(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        answer: Future[ipb.GenerateResponse] = Future()

        def done(future: Future[Generation]) -> None:
            try:
                generation = future.result()
            except EngineClosedError as exc:
                answer.set_exception(KeyAbortedError(grpc.StatusCode.UNAVAILABLE, str(exc)))
                return
            except Exception as exc:
                log.error("generation failed", exc_info=exc, extra={"request_id": request.request_id})
                answer.set_exception(KeyAbortedError(grpc.StatusCode.INTERNAL, f"generation failed: {exc}"))
                return
            answer.set_result(
                ipb.GenerateResponse(
                    token_ids=generation.token_ids,
                    logprobs=generation.logprobs,
                    finish_reason=_FINISH[generation.finish_reason],
                    policy_version=generation.policy_version,
                )
            )

        submitted.add_done_callback(done)
        return answer

    def UpdateWeights(
        self, request_iterator: Iterator[ipb.WeightChunk], context: grpc.ServicerContext
    ) -> ipb.UpdateWeightsResponse:
        header: ipb.WeightUpdateHeader | None = None
        data = bytearray()
        for chunk in request_iterator:
            kind = chunk.WhichOneof("chunk")
            if kind == "header":
                if header is not None:
                    abort(context, grpc.StatusCode.INVALID_ARGUMENT, "a second header: send exactly one, first")
                header = chunk.header
                if header.format not in ("safetensors", ""):
                    abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unsupported format {header.format!r}")
                if not 0 < header.total_bytes <= self.max_weight_bytes:
                    abort(
                        context,
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"total_bytes must be in (0, {self.max_weight_bytes}], got {header.total_bytes}",
                    )
                if len(header.sha256) != 64:
                    abort(context, grpc.StatusCode.INVALID_ARGUMENT, "sha256 must be 64 hex digits")
            elif kind == "data":
                if header is None:
                    abort(context, grpc.StatusCode.INVALID_ARGUMENT, "data before the header: send the header first")
                data += chunk.data
                if len(data) > header.total_bytes:
                    abort(
                        context,
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"received more than the announced total_bytes {header.total_bytes}",
                    )
            else:
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, "empty WeightChunk: set header or data")
        if header is None:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "no header: the first chunk must be a WeightUpdateHeader")
        if len(data) != header.total_bytes:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"received {len(data)} bytes, the header announced {header.total_bytes}",
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != header.sha256.lower():
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"sha256 mismatch: got {digest}, header {header.sha256}")
        try:
            self.engine.update_weights(bytes(data), header.version, checkpoint=f"sha256:{digest}")
        except WeightMismatchError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"weights do not fit the model: {exc}")
        except StaleVersionError as exc:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except EngineClosedError as exc:
            abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return ipb.UpdateWeightsResponse(policy_version=self._policy_version(), bytes_received=len(data))

    def GetModelInfo(self, request: ipb.GetModelInfoRequest, context: grpc.ServicerContext) -> ipb.ModelInfo:
        info = self.engine.info()
        return ipb.ModelInfo(
            model_id=info.model_id,
            backend=info.backend,
            policy_version=self._policy_version(),
            vocab_size=info.vocab_size,
            max_model_len=info.max_model_len,
            num_parameters=info.num_parameters,
            eos_token_ids=info.eos_token_ids,
        )


def build_engine(config: InferenceConfig) -> InferenceEngine:
    """The engine `config.backend` names; torch/transformers or vLLM are imported only by the one chosen."""
    assert config.model is not None  # the validator guarantees it
    if config.backend == "vllm":
        return VLLMEngine(
            config.model,
            gpu_memory_utilization=config.gpu_memory_utilization,
            tensor_parallel_size=config.tensor_parallel_size,
            max_model_len=config.max_model_len,
            dtype=config.dtype,
            engine_args=config.vllm_engine_args,
            weights_dir=config.weights_dir,
        )
    import torch

    from eigenloop.inference.engine import TransformersEngine

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)  # spinning thread pools on oversubscribed cores stall every step
    return TransformersEngine(
        config.model,
        device=config.device,
        max_batch_size=config.max_batch_size,
        batch_window_ms=config.batch_window_ms,
        prefix_cache_entries=config.prefix_cache_entries,
        max_model_len=config.max_model_len,
    )


def registrations(config: InferenceConfig) -> list[Registration]:
    engine = build_engine(config)
    info = engine.info()
    loaded: dict[str, Any] = {
        "model": str(config.model),
        "backend": info.backend,
        "parameters": info.num_parameters,
        "max_model_len": info.max_model_len,
    }
    if config.backend == "transformers":
        loaded["device"] = config.device
    log.info("model loaded", extra=loaded)
    if config.http_port >= 0:
        http = OpenAIHTTPServer(
            ChatFrontend(engine),
            config.http_host or config.host,
            config.http_port,
            max_body_bytes=config.max_message_bytes,
            max_concurrent=config.http_max_concurrent,
        ).start()
        log.info("openai http serving", extra={"http_port": http.port, "base_url": http.base_url})
    servicer: Any = InferenceServicer(engine, config.max_weight_bytes)
    return [Registration("eigenloop.v1.Inference", servicer, inference_pb2_grpc.add_InferenceServicer_to_server)]


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("inference", InferenceConfig, registrations, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
