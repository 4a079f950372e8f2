"""A vLLM engine behind the interface of TransformersEngine (`base.InferenceEngine`): GPU only, the `vllm` extra.

vLLM batches continuously: requests join and leave the running batch at every decode step (paged KV cache, its own
prefix cache). This wrapper owns one `vllm.LLM` and a scheduler thread, the only thread that talks to vLLM's engine
(`LLMEngine.add_request` / `step` / `abort_request`), so `submit` may be called from any thread: it validates,
queues and returns a future, and the scheduler adds queued requests to the running batch between two steps.

Each request asks vLLM for the logprob of its sampled tokens only (`logprobs=0`) in vLLM's `raw_logprobs` mode,
log_softmax of the raw logits, before temperature/top-k/top-p: what TransformersEngine returns and a trainer needs.

Weight updates pass a writer-preferring readers-writer gate, with requests as readers:
1. `update_weights` checks the blob (safetensors: names, shapes and dtype kinds against the checkpoint on disk,
   floats finite) while generation goes on, and stages it as a file in `weights_dir`;
2. the scheduler stops admitting requests (new ones wait in the queue) and steps until every admitted request has
   finished, on the old weights, reporting the old version (drain);
3. with nothing in flight, every vLLM worker loads the file (`collective_rpc` into vllm_worker.py), vLLM's prefix
   cache is reset (its KV blocks came from the old weights), the version is bumped, and admission resumes (release).
No request runs across a swap. A load that fails midway leaves the weights undefined, so the engine closes itself:
requests then fail with EngineClosedError (gRPC UNAVAILABLE) until the server is restarted.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import json
import logging
import math
import os
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.inference.base import (
    POLICY_VERSION,
    QUEUE_DEPTH,
    REQUESTS,
    TOKENS_GENERATED,
    WEIGHT_UPDATES,
    EngineClosedError,
    EngineInfo,
    FinishReason,
    Generation,
    InvalidRequestError,
    ServedModel,
    StaleVersionError,
    WeightMismatchError,
    as_token_ids,
)
from eigenloop.inference.vllm_worker import LOAD_WEIGHTS, QUALNAME
from eigenloop.llm.base import BackendError

log = logging.getLogger(__name__)

VLLM_INSTALL_HINT = "install it on a GPU machine with `pip install 'eigenloop[vllm]'` (or use the inference-cuda image)"

# What eigenloop passes to vllm.LLM itself, and why `engine_args` may not set it.
OWN_ENGINE_ARGS = {
    "model": "the model setting",
    "dtype": "the dtype setting",
    "gpu_memory_utilization": "the gpu_memory_utilization setting",
    "tensor_parallel_size": "the tensor_parallel_size setting",
    "max_model_len": "the max_model_len setting",
    "worker_extension_cls": "eigenloop's weight loader",
    "logprobs_mode": "raw_logprobs: returned logprobs are untempered",
    "skip_tokenizer_init": "the OpenAI endpoint needs the tokenizer",
}

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort"}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


class VLLMUnavailableError(ImportError):
    """vLLM cannot be imported in this environment."""


def vllm_installed() -> bool:
    """Whether `import vllm` can find a package (without importing it: that takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def check_engine_args(engine_args: Mapping[str, Any]) -> None:
    """Raise ValueError when `engine_args` sets something eigenloop sets itself."""
    clashes = sorted(set(engine_args) & set(OWN_ENGINE_ARGS))
    if clashes:
        reasons = "; ".join(f"{name} (set by {OWN_ENGINE_ARGS[name]})" for name in clashes)
        raise ValueError(f"vLLM engine args may not set {reasons}")


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str
    """The safetensors dtype code, e.g. "BF16", "F32", "I64"."""


def _header_specs(header: Mapping[str, Any]) -> dict[str, TensorSpec]:
    return {
        name: TensorSpec(tuple(int(d) for d in entry["shape"]), str(entry["dtype"]))
        for name, entry in header.items()
        if name != "__metadata__"
    }


def blob_specs(data: bytes) -> dict[str, TensorSpec]:
    """Tensor names, shapes and dtypes from a safetensors blob's header (8-byte little-endian length, then JSON)."""
    try:
        (size,) = struct.unpack_from("<Q", data)
        header = json.loads(data[8 : 8 + size])
        return _header_specs(header)
    except (struct.error, ValueError, TypeError, KeyError, AttributeError) as err:
        raise WeightMismatchError(f"not a safetensors blob: {err}") from err


def checkpoint_specs(model_dir: Path) -> dict[str, TensorSpec]:
    """Every tensor of the `*.safetensors` files in `model_dir`, from their headers only (no tensor is read)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise BackendError(
            f"{model_dir} has no *.safetensors checkpoint: the vllm backend checks weight updates against it"
        )
    specs: dict[str, TensorSpec] = {}
    for file in files:
        try:
            with file.open("rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                specs.update(_header_specs(json.loads(handle.read(size))))
        except (OSError, struct.error, ValueError, TypeError, KeyError, AttributeError) as err:
            raise BackendError(f"cannot read the safetensors header of {file}: {err}") from err
    return specs


def read_eos_token_ids(model_dir: Path, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS and those of config.json and generation_config.json, as TransformersEngine stops on."""
    ids = set(as_token_ids(getattr(tokenizer, "eos_token_id", None)))
    for name in ("config.json", "generation_config.json"):
        file = model_dir / name
        if file.is_file():
            ids |= set(as_token_ids(json.loads(file.read_text()).get("eos_token_id")))
    return sorted(ids)


def _import_vllm() -> tuple[Any, Any, Any]:
    """The vllm module, RequestOutputKind.FINAL_ONLY and vllm.inputs.TokensPrompt; VLLMUnavailableError if absent."""
    try:
        vllm = importlib.import_module("vllm")
        final_only = importlib.import_module("vllm.sampling_params").RequestOutputKind.FINAL_ONLY
        tokens_prompt = importlib.import_module("vllm.inputs").TokensPrompt
    except ImportError as err:
        raise VLLMUnavailableError(f"the vllm backend cannot import vllm ({err}): {VLLM_INSTALL_HINT}") from err
    return vllm, final_only, tokens_prompt


@dataclass
class _Request:
    prompt_ids: list[int]
    params: Any
    """vllm.SamplingParams"""
    request_id: str = ""
    version: int = 0
    """The policy version serving it, set when it joins the running batch."""
    future: Future[Generation] = field(default_factory=Future)


@dataclass
class _Swap:
    path: str
    version: int
    checkpoint: str
    done: Future[list[int]] = field(default_factory=Future)
    """Resolves to what each worker loaded (tensor counts) once the new version serves."""


class VLLMEngine(ServedModel):
    """One `vllm.LLM` serving `generate` calls from many threads, batched continuously by vLLM.

    Sampling per request as in TransformersEngine: temperature 0 is greedy; top_k 0 and top_p 0 or 1 are off; `seed`
    seeds the request's own generator (vLLM's per-request seed; other requests do not shift it, but bitwise results
    can still depend on the batch composition on a GPU). `max_new_tokens` 0 means up to the end of the context. A
    request ends on EOS or one of its stop ids (included, finish "stop") or at its length limit ("length").
    """

    backend = "vllm"

    def __init__(
        self,
        path: str | Path,
        *,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        max_model_len: int = 0,
        dtype: str = "auto",
        engine_args: Mapping[str, Any] | None = None,
        weights_dir: str | Path | None = None,
        max_queue: int = 4096,
    ) -> None:
        extra = dict(engine_args or {})
        check_engine_args(extra)
        vllm, self._final_only, self._tokens_prompt = _import_vllm()
        model_dir = Path(path)
        if not model_dir.is_dir():
            raise BackendError(f"local model directory not found: {model_dir}")
        self.path = str(path)
        self.model_id = model_dir.name or self.path
        self._expected = checkpoint_specs(model_dir)
        self.num_parameters = sum(math.prod(spec.shape) for spec in self._expected.values())
        self.weights_dir = Path(weights_dir) if weights_dir else Path(tempfile.gettempdir())
        if not self.weights_dir.is_dir():  # found out now, not at the first update after minutes of loading
            raise BackendError(f"weights_dir {self.weights_dir} is not a directory")
        self.max_queue = max_queue
        self._sampling_params = vllm.SamplingParams
        # vLLM forks its engine process unless told otherwise, and it only sees CUDA as in use once torch has made a
        # context. A parent that merely asked `torch.cuda.is_available()` leaves a forked child that cannot use CUDA.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        self._llm = vllm.LLM(
            model=str(model_dir),
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len or None,
            worker_extension_cls=QUALNAME,
            logprobs_mode="raw_logprobs",
            **extra,
        )
        self._engine = self._llm.llm_engine
        # The client of vLLM's engine process, which holds the GPU memory; None once close() has shut it down.
        self._core: Any = self._engine.engine_core
        model_config = self._engine.model_config
        self.vocab_size = int(model_config.get_vocab_size())
        self.max_model_len = int(model_config.max_model_len)
        self.tokenizer: Any = self._llm.get_tokenizer()
        self.eos_token_ids = read_eos_token_ids(model_dir, self.tokenizer)

        self._update_lock = threading.Lock()  # one update at a time (checked and staged outside the gate)
        self._cond = threading.Condition()  # guards the queue, the pending swap, the version and the closed state
        self._pending: deque[_Request] = deque()
        self._swap: _Swap | None = None
        self._closed: str | None = None  # why, once closed
        self._version = 0
        self._checkpoint = self.path
        self._updated_at = time.time()
        self._ids = itertools.count()
        self._running: dict[str, _Request] = {}  # owned by the scheduler thread
        POLICY_VERSION.set(0)
        self._scheduler = threading.Thread(target=self._run, name="vllm-scheduler", daemon=True)
        self._scheduler.start()

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    def info(self) -> EngineInfo:
        with self._cond:
            return self.described(self._version, self._checkpoint, self._updated_at)

    def sampling_params(self, params: pb.SamplingParams, max_new_tokens: int) -> Any:
        """The vllm.SamplingParams serving `params` (validated) for at most `max_new_tokens` tokens."""
        return self._sampling_params(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p or 1.0,  # the contract's 0 means no nucleus truncation; vLLM wants (0, 1]
            top_k=params.top_k or -1,  # -1 is "off" in every vLLM version (older ones reject 0)
            max_tokens=max_new_tokens,
            # vLLM stops on the tokenizer's EOS by itself; the config's EOS ids too, as TransformersEngine does.
            stop_token_ids=sorted(set(params.stop_token_ids) | set(self.eos_token_ids)),
            seed=params.seed if params.HasField("seed") else None,
            logprobs=0,  # the sampled token's logprob, no alternatives
            detokenize=False,  # callers get token ids; text would cost CPU per step
            output_kind=self._final_only,  # one RequestOutput per request, when it finishes
        )

    def submit(self, prompt_ids: list[int], params: pb.SamplingParams) -> Future[Generation]:
        """Queue a request (validated first: InvalidRequestError); the future resolves when it finishes."""
        request = _Request(list(prompt_ids), self.sampling_params(params, self.validate(prompt_ids, params)))
        with self._cond:
            if self._closed is not None:
                raise EngineClosedError(self._closed)
            if len(self._pending) >= self.max_queue:
                raise InvalidRequestError(f"queue full ({self.max_queue} waiting requests); retry later")
            request.request_id = f"eigenloop-{next(self._ids)}"
            self._pending.append(request)
            QUEUE_DEPTH.set(len(self._pending))
            self._cond.notify_all()
        return request.future

    def generate(self, prompt_ids: list[int], params: pb.SamplingParams, timeout_s: float | None = None) -> Generation:
        """Generate a completion of `prompt_ids`; blocks until it finishes. Thread-safe."""
        return self.submit(prompt_ids, params).result(timeout=timeout_s)

    def update_weights(self, data: bytes, version: int, checkpoint: str = "") -> int:
        """Load a safetensors blob into the served model and serve it as `version`; returns it.

        Every tensor of the checkpoint on disk must be present, with its shape, and no other tensor; floating point
        tensors may come in another float dtype (vLLM casts to the served dtype), others must match exactly
        (WeightMismatchError, and the old weights keep serving). `version` must be greater than the served one
        (StaleVersionError). Blocks while requests already running finish; EngineClosedError if the load fails.
        """
        with self._update_lock:
            if version <= self._version:
                WEIGHT_UPDATES.labels("stale_version").inc()
                raise StaleVersionError(f"version {version} is not newer than the served version {self._version}")
            try:
                self._check_weights(data)
            except WeightMismatchError:
                WEIGHT_UPDATES.labels("mismatch").inc()
                raise
            started = time.perf_counter()
            swap = _Swap(self._stage(data), version, checkpoint or f"update:{version}")
            try:
                with self._cond:
                    if self._closed is not None:
                        raise EngineClosedError(self._closed)
                    self._swap = swap
                    self._cond.notify_all()
                try:
                    loaded = swap.done.result()
                except EngineClosedError:
                    WEIGHT_UPDATES.labels("failed").inc()
                    raise
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(swap.path)
            POLICY_VERSION.set(version)
            WEIGHT_UPDATES.labels("ok").inc()
            log.info(
                "weights updated",
                extra={
                    "version": version,
                    "tensors_per_worker": loaded,
                    "update_s": round(time.perf_counter() - started, 3),
                },
            )
            return version

    def close(self) -> None:
        """Stop the scheduler: waiting and running requests, and a pending update, fail with EngineClosedError. Then
        shut vLLM's engine process down, which gives its GPU memory back (otherwise held until this process exits)."""
        self._shut("the engine is closed")
        self._scheduler.join(timeout=30)
        with self._cond:
            core, self._core = self._core, None
        if core is not None:
            try:
                core.shutdown()
            except Exception:
                log.exception("vllm engine shutdown failed")

    # -- weights ---------------------------------------------------------------------------------------------

    def _check_weights(self, data: bytes) -> None:
        given = blob_specs(data)
        unexpected = sorted(set(given) - set(self._expected))
        if unexpected:
            raise WeightMismatchError(f"{len(unexpected)} tensor(s) the model does not have: {unexpected[:5]}")
        missing = sorted(set(self._expected) - set(given))
        if missing:
            raise WeightMismatchError(f"{len(missing)} model tensor(s) missing: {missing[:5]}")
        for name, got in given.items():
            want = self._expected[name]
            if got.shape != want.shape:
                raise WeightMismatchError(f"{name}: got shape {got.shape}, the model has {want.shape}")
            if (got.dtype in _FLOAT_DTYPES) != (want.dtype in _FLOAT_DTYPES) or (
                want.dtype not in _FLOAT_DTYPES and got.dtype != want.dtype
            ):
                raise WeightMismatchError(f"{name}: got dtype {got.dtype}, the model has {want.dtype}")
        # torch comes with vLLM; importing it here keeps this module importable (for its errors) without either.
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            tensors = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as err:
            raise WeightMismatchError(f"not a safetensors blob: {err}") from err
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise WeightMismatchError(f"{name}: contains NaN or infinite values")

    def _stage(self, data: bytes) -> str:
        """Write the blob where every vLLM worker process can read it; returns the path."""
        fd, path = tempfile.mkstemp(prefix="eigenloop-weights-", suffix=".safetensors", dir=self.weights_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except BaseException:
            os.unlink(path)
            raise
        return path

    # -- scheduler -------------------------------------------------------------------------------------------

    def _shut(self, reason: str) -> None:
        """Close (once): fail what waits for admission and a pending swap; the scheduler fails what runs."""
        with self._cond:
            if self._closed is None:
                self._closed = reason
            pending, self._pending = list(self._pending), deque()
            swap, self._swap = self._swap, None
            QUEUE_DEPTH.set(0)
            self._cond.notify_all()
        for request in pending:
            request.future.set_exception(EngineClosedError(reason))
        if swap is not None:
            swap.done.set_exception(EngineClosedError(reason))

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._closed is None and not self._pending and not self._running and self._swap is None:
                    self._cond.wait()
                if self._closed is not None:
                    reason = self._closed
                    break
                swap = self._swap
                admit: list[_Request] = []
                if swap is None:  # a pending swap holds new requests back until the running ones drain
                    admit, self._pending = list(self._pending), deque()
                    QUEUE_DEPTH.set(0)
            for request in admit:
                self._admit(request)
            if self._running:
                self._step()
            elif swap is not None:
                self._apply(swap)
        self._fail_running(EngineClosedError(reason))

    def _admit(self, request: _Request) -> None:
        prompt = self._tokens_prompt(prompt_token_ids=request.prompt_ids)
        try:
            self._engine.add_request(request.request_id, prompt, request.params)
        except Exception as err:  # vLLM refused this request: it fails alone
            request.future.set_exception(err)
            return
        request.version = self._version
        self._running[request.request_id] = request

    def _step(self) -> None:
        try:
            outputs = self._engine.step()
        except Exception as err:  # a failed step fails the requests in it, never the scheduler
            log.exception("vllm step failed", extra={"requests": len(self._running)})
            self._fail_running(err)
            return
        for output in outputs:
            # FINAL_ONLY sends nothing else, but a partial output must never resolve a request.
            if not output.finished:
                continue
            request = self._running.pop(output.request_id, None)
            if request is None:
                continue
            try:
                generation = _generation(output, request.version)
            except Exception as err:
                request.future.set_exception(err)
                continue
            TOKENS_GENERATED.inc(len(generation.token_ids))
            REQUESTS.labels(generation.finish_reason).inc()
            request.future.set_result(generation)

    def _fail_running(self, err: BaseException) -> None:
        if not self._running:
            return
        try:
            self._engine.abort_request(list(self._running))
        except Exception:
            log.exception("vllm abort failed", extra={"requests": len(self._running)})
        for request in self._running.values():
            request.future.set_exception(err)
        self._running.clear()

    def _apply(self, swap: _Swap) -> None:
        """Load the staged weights; runs on the scheduler thread with no request in vLLM."""
        try:
            loaded = self._llm.collective_rpc(LOAD_WEIGHTS, args=(swap.path,))
            # False: some KV blocks are still referenced, so cached prefixes of the old weights could be reused.
            if self._llm.reset_prefix_cache() is False:
                raise RuntimeError("vLLM could not reset its prefix cache")
        except Exception as err:
            log.exception("weight load failed", extra={"version": swap.version})
            self._shut(
                f"loading the weights of version {swap.version} failed ({err}); the served weights are undefined: "
                "restart the server"
            )
            return
        with self._cond:
            self._version = swap.version
            self._checkpoint = swap.checkpoint
            self._updated_at = time.time()
            self._swap = None
        swap.done.set_result([int(n) for n in loaded])


def _generation(output: Any, version: int) -> Generation:
    """A finished vllm.RequestOutput (n=1, logprobs=0) as a Generation."""
    completion = output.outputs[0]
    token_ids = [int(t) for t in completion.token_ids]
    # One entry per sampled token: {token id: Logprob}, holding the sampled token (and, were logprobs > 0, others).
    steps = completion.logprobs
    if steps is None or len(steps) != len(token_ids):
        got = "no" if steps is None else len(steps)
        raise RuntimeError(f"vLLM returned {got} logprob entries for {len(token_ids)} tokens")
    logprobs = [float(step[token].logprob) for step, token in zip(steps, token_ids, strict=True)]
    # "abort" (and anything newer vLLM may add) is not a normal end: report it as such.
    finish = _FINISH.get(str(completion.finish_reason), "abort")
    return Generation(token_ids, logprobs, finish, version)
