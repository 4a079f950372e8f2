"""What every inference engine shares: results, errors, request checks, metrics, and the interface the servers use.

Two engines implement `InferenceEngine`: `engine.TransformersEngine` (torch + transformers, CPU or GPU) and
`vllm_engine.VLLMEngine` (vLLM, GPU only). The gRPC servicer and the OpenAI HTTP endpoint depend on this module only,
so neither torch nor vLLM is imported until an engine is built.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from prometheus_client import Counter, Gauge, Histogram

from eigenloop.contracts.v1 import common_pb2 as pb

FinishReason = Literal["stop", "length", "abort"]

BATCH_SIZE = Histogram(
    "eigenloop_inference_batch_size",
    "Requests decoded together in one batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
TOKENS_GENERATED = Counter("eigenloop_inference_tokens_generated_total", "Tokens sampled, over all requests.")
QUEUE_DEPTH = Gauge("eigenloop_inference_queue_depth", "Requests waiting for a batch.")
POLICY_VERSION = Gauge("eigenloop_inference_policy_version", "The policy version being served.")
REQUESTS = Counter("eigenloop_inference_requests_total", "Finished generate requests.", ["finish_reason"])
BATCH_SECONDS = Histogram(
    "eigenloop_inference_batch_seconds",
    "Wall time of one batch, prefill to last token.",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60),
)
WEIGHT_UPDATES = Counter("eigenloop_inference_weight_updates_total", "Weight updates by outcome.", ["outcome"])


class InvalidRequestError(ValueError):
    """The request cannot be served as asked (empty prompt, unknown token ids, no room in the context, ...)."""


class WeightMismatchError(ValueError):
    """The weights do not fit the model (names, shapes or dtypes), or the blob is not safetensors."""


class StaleVersionError(ValueError):
    """An update's version is not greater than the one being served."""


class EngineClosedError(RuntimeError):
    """The engine was closed before the request finished."""


@dataclass(frozen=True)
class Generation:
    token_ids: list[int]
    """Sampled token ids; the stop/EOS token that ended the row, if any, is included."""
    logprobs: list[float]
    """One per token: log_softmax of the model's raw (untempered, unfiltered) logits at the sampled token."""
    finish_reason: FinishReason
    policy_version: int


@dataclass(frozen=True)
class EngineInfo:
    model_id: str
    vocab_size: int
    max_model_len: int
    num_parameters: int
    eos_token_ids: list[int]
    version: int
    checkpoint: str
    updated_at: float
    backend: str
    """"transformers" or "vllm", as GetModelInfo reports it."""


class InferenceEngine(Protocol):
    """What the gRPC servicer and the OpenAI endpoint use from an engine. Every method is thread-safe."""

    path: str
    model_id: str
    tokenizer: Any
    eos_token_ids: list[int]

    @property
    def version(self) -> int: ...

    def info(self) -> EngineInfo: ...

    def validate(self, prompt_ids: list[int], params: pb.SamplingParams) -> int: ...

    def submit(self, prompt_ids: list[int], params: pb.SamplingParams) -> Future[Generation]: ...

    def generate(
        self, prompt_ids: list[int], params: pb.SamplingParams, timeout_s: float | None = None
    ) -> Generation: ...

    def update_weights(self, data: bytes, version: int, checkpoint: str = "") -> int: ...

    def close(self) -> None: ...


def as_token_ids(value: Any) -> list[int]:
    """A config's `eos_token_id`-style value (None, one id, or a list of ids) as a list."""
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


class ServedModel:
    """What an engine knows of the model it serves, and the `validate` / `info` answers both engines give from it."""

    backend: str
    """"transformers" or "vllm", as GetModelInfo reports it."""
    model_id: str
    vocab_size: int
    max_model_len: int
    num_parameters: int
    eos_token_ids: list[int]

    def validate(self, prompt_ids: list[int], params: pb.SamplingParams) -> int:
        """Raise InvalidRequestError when the request cannot be served; return the effective max_new_tokens."""
        return _check_request(prompt_ids, params, vocab_size=self.vocab_size, max_model_len=self.max_model_len)

    def described(self, version: int, checkpoint: str, updated_at: float) -> EngineInfo:
        """The engine's info at one version (the caller reads version, checkpoint and time under its own lock)."""
        return EngineInfo(
            model_id=self.model_id,
            vocab_size=self.vocab_size,
            max_model_len=self.max_model_len,
            num_parameters=self.num_parameters,
            eos_token_ids=list(self.eos_token_ids),
            version=version,
            checkpoint=checkpoint,
            updated_at=updated_at,
            backend=self.backend,
        )


def _check_request(prompt_ids: list[int], params: pb.SamplingParams, *, vocab_size: int, max_model_len: int) -> int:
    """Raise InvalidRequestError when the request cannot be served; return the effective max_new_tokens
    (`params.max_new_tokens`, or the room left in the context when that is 0)."""
    if not prompt_ids:
        raise InvalidRequestError("prompt_token_ids is empty")
    bad = [t for t in prompt_ids if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequestError(f"token ids outside the vocabulary [0, {vocab_size}): {bad[:8]}")
    room = max_model_len - len(prompt_ids)
    if room < 1:
        raise InvalidRequestError(
            f"prompt of {len(prompt_ids)} tokens leaves no room in the context of {max_model_len}"
        )
    if params.max_new_tokens < 0:
        raise InvalidRequestError(f"max_new_tokens must be >= 0, got {params.max_new_tokens}")
    if params.max_new_tokens > room:
        raise InvalidRequestError(
            f"max_new_tokens {params.max_new_tokens} + prompt {len(prompt_ids)} exceeds the context "
            f"of {max_model_len} tokens"
        )
    if not params.temperature >= 0:  # also rejects NaN
        raise InvalidRequestError(f"temperature must be >= 0, got {params.temperature}")
    if not 0 <= params.top_p <= 1:
        raise InvalidRequestError(f"top_p must be in [0, 1], got {params.top_p}")
    if params.top_k < 0:
        raise InvalidRequestError(f"top_k must be >= 0, got {params.top_k}")
    bad = [t for t in params.stop_token_ids if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequestError(f"stop_token_ids outside the vocabulary: {bad[:8]}")
    return params.max_new_tokens or room
