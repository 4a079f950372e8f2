"""A dynamically batched generation engine over a local transformers causal LM, with atomic weight updates.

Many threads call `TransformersEngine.generate`; one background thread gathers the waiting requests for up to
`batch_window_ms` (or until `max_batch_size` are waiting), left-pads them into one batch, and decodes it with a KV
cache, sampling each row with its own parameters and stopping each row on its own. A batch holds the weights lock
from its first forward to its last, and `update_weights` takes the same lock to swap tensors, so every request is
generated entirely by one policy version, which it reports.

Multi-turn episodes send their history again every turn; the KV states of each finished row are kept in a prefix
cache (prefix_cache.py), so a prompt that continues an earlier sequence encodes only its new tokens. The cache is
emptied when the weights change.
"""

from __future__ import annotations

import inspect
import logging
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from transformers import AutoModelForCausalLM, AutoTokenizer

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.inference.base import (
    BATCH_SECONDS,
    BATCH_SIZE,
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
from eigenloop.inference.kv_cache import ReservedLayer, reserved_cache
from eigenloop.inference.prefix_cache import CachedPrefix, PrefixCache
from eigenloop.llm.base import BackendError

log = logging.getLogger(__name__)


def load_tokenizer_and_model(path: str | Path, *, device: str | None = None) -> tuple[Any, Any]:
    """Tokenizer and causal LM from a local directory (never the hub), the model in eval mode on `device`."""
    p = Path(path)
    if not p.is_dir():
        raise BackendError(f"local model directory not found: {p}")
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError) as err:
        raise BackendError(f"cannot load a tokenizer and causal LM from {p}: {err}") from err
    if device is not None:
        model = model.to(device)
    model.eval()
    return tokenizer, model


@dataclass
class _Request:
    prompt_ids: list[int]
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    stop_ids: frozenset[int]
    rng: random.Random
    future: Future[Generation] = field(default_factory=Future)
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: FinishReason | None = None


class TransformersEngine(ServedModel):
    """One causal LM serving `generate` calls from many threads, batched dynamically.

    Sampling per request: temperature 0 is greedy (argmax), otherwise softmax(logits / temperature) after top_k
    (0 = off) and top_p (0 or 1 = off) filtering, drawn by inverse CDF from a per-request uniform stream seeded
    from `params.seed` when set (random otherwise). Returned logprobs are always those of the untempered distribution,
    log_softmax of the raw logits, whatever temperature/top_p/top_k did to the sampling distribution: they are
    what a trainer needs to recompute the policy's probability of the tokens it sampled.

    `max_new_tokens` 0 means "up to the end of the context" (`max_model_len`). A row ends on EOS or one of its
    stop ids (included in the output, finish "stop"), or after `max_new_tokens` / at the context end ("length").
    Greedy results are independent of which requests share a batch (left padding, masked and position-corrected).
    """

    backend = "transformers"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | None = None,
        max_batch_size: int = 8,
        batch_window_ms: float = 5.0,
        max_model_len: int = 0,
        max_queue: int = 4096,
        prefix_cache_entries: int = 256,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must be >= 0, got {batch_window_ms}")
        self.path = str(path)
        self.model_id = Path(path).name or self.path
        self.tokenizer, self.model = load_tokenizer_and_model(path, device=device)
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_ms / 1000.0
        self.max_queue = max_queue
        config = self.model.config
        self.vocab_size = int(self.model.get_input_embeddings().weight.shape[0])
        model_len = int(getattr(config, "max_position_embeddings", 0) or 0)
        if max_model_len > 0:
            self.max_model_len = min(max_model_len, model_len) if model_len else max_model_len
        elif model_len:
            self.max_model_len = model_len
        else:
            raise ValueError(f"{self.path}: the model config has no max_position_embeddings; set max_model_len")
        self.eos_token_ids = sorted(
            set(as_token_ids(self.tokenizer.eos_token_id))
            | set(as_token_ids(getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)))
            | set(as_token_ids(getattr(config, "eos_token_id", None)))
        )
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else (self.eos_token_ids[0] if self.eos_token_ids else 0)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in params

        self._weights_lock = threading.Lock()  # held by a whole batch, and by a weight swap
        self._update_lock = threading.Lock()  # one update at a time (validation happens outside the weights lock)
        self._version = 0
        self._checkpoint = self.path
        self._updated_at = time.time()
        POLICY_VERSION.set(0)

        # Sliding-window layers keep only their window of KV states, so there is no whole prefix to store.
        full_kv = all(isinstance(layer, ReservedLayer) for layer in reserved_cache(config, 1).layers)
        # Used by the batcher thread, under the weights lock.
        self._prefix = PrefixCache(prefix_cache_entries if full_kv else 0)
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="inference-batcher", daemon=True)
        self._worker.start()

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device  # type: ignore[no-any-return]

    @property
    def version(self) -> int:
        return self._version

    def info(self) -> EngineInfo:
        with self._update_lock:
            return self.described(self._version, self._checkpoint, self._updated_at)

    def submit(self, prompt_ids: list[int], params: pb.SamplingParams) -> Future[Generation]:
        """Queue a request (validated first: InvalidRequestError); the future resolves when its row finishes."""
        max_new = self.validate(prompt_ids, params)
        request = _Request(
            prompt_ids=list(prompt_ids),
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_new_tokens=max_new,
            stop_ids=frozenset(params.stop_token_ids),
            rng=random.Random(params.seed) if params.HasField("seed") else random.Random(),
        )
        with self._cond:
            if self._closed:
                raise EngineClosedError("the engine is closed")
            if len(self._pending) >= self.max_queue:
                raise InvalidRequestError(f"queue full ({self.max_queue} waiting requests); retry later")
            self._pending.append(request)
            QUEUE_DEPTH.set(len(self._pending))
            self._cond.notify_all()
        return request.future

    def generate(self, prompt_ids: list[int], params: pb.SamplingParams, timeout_s: float | None = None) -> Generation:
        """Generate a completion of `prompt_ids`; blocks until its batch row finishes. Thread-safe."""
        return self.submit(prompt_ids, params).result(timeout=timeout_s)

    def update_weights(self, data: bytes, version: int, checkpoint: str = "") -> int:
        """Replace the model's weights with a safetensors blob and serve them as `version`; returns it.

        Every tensor the model has must be present (tied aliases may be left out) with the same shape and dtype,
        and no other tensor may be: otherwise WeightMismatchError and the old weights keep serving. `version`
        must be greater than the current one (StaleVersionError). The swap happens between batches.
        """
        with self._update_lock:
            if version <= self._version:
                WEIGHT_UPDATES.labels("stale_version").inc()
                raise StaleVersionError(f"version {version} is not newer than the served version {self._version}")
            try:
                tensors = self._check_weights(data)
            except WeightMismatchError:
                WEIGHT_UPDATES.labels("mismatch").inc()
                raise
            device = self.device
            staged = {name: t.to(device) for name, t in tensors.items()}  # copied before the lock: short swap
            targets = self.model.state_dict(keep_vars=True)
            started = time.perf_counter()
            with self._weights_lock, torch.no_grad():
                for name, tensor in staged.items():
                    targets[name].data.copy_(tensor)
                self._prefix.clear()  # KV states of the old weights
                self._version = version
                self._checkpoint = checkpoint or f"update:{version}"
                self._updated_at = time.time()
            POLICY_VERSION.set(version)
            WEIGHT_UPDATES.labels("ok").inc()
            log.info(
                "weights updated",
                extra={"version": version, "tensors": len(staged), "swap_s": round(time.perf_counter() - started, 4)},
            )
            return version

    def close(self) -> None:
        """Stop the batcher; requests still waiting fail with EngineClosedError."""
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, []
            QUEUE_DEPTH.set(0)
            self._cond.notify_all()
        for request in pending:
            request.future.set_exception(EngineClosedError("the engine closed before this request ran"))
        self._worker.join(timeout=30)

    # -- weights ---------------------------------------------------------------------------------------------

    def _check_weights(self, data: bytes) -> dict[str, torch.Tensor]:
        try:
            tensors: dict[str, torch.Tensor] = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as err:
            raise WeightMismatchError(f"not a safetensors blob: {err}") from err
        expected: Mapping[str, torch.Tensor] = self.model.state_dict()
        unexpected = sorted(set(tensors) - set(expected))
        if unexpected:
            raise WeightMismatchError(f"{len(unexpected)} tensor(s) the model does not have: {unexpected[:5]}")
        given_ptrs = {expected[name].data_ptr() for name in tensors}
        missing = sorted(n for n in expected if n not in tensors and expected[n].data_ptr() not in given_ptrs)
        if missing:
            raise WeightMismatchError(f"{len(missing)} model tensor(s) missing: {missing[:5]}")
        for name, tensor in tensors.items():
            want = expected[name]
            if tuple(tensor.shape) != tuple(want.shape) or tensor.dtype != want.dtype:
                raise WeightMismatchError(
                    f"{name}: got {tuple(tensor.shape)} {tensor.dtype}, the model has {tuple(want.shape)} {want.dtype}"
                )
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise WeightMismatchError(f"{name}: contains NaN or infinite values")
        return tensors

    # -- batching --------------------------------------------------------------------------------------------

    def _take_batch(self) -> list[_Request] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = time.monotonic() + self.batch_window_s
            while len(self._pending) < self.max_batch_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size :]
            QUEUE_DEPTH.set(len(self._pending))
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            started = time.perf_counter()
            try:
                with self._weights_lock:
                    version = self._version
                    self._decode(batch)
            except Exception as err:  # a failed batch fails its requests, never the batcher
                log.exception("batch failed", extra={"batch_size": len(batch)})
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(err)
                continue
            BATCH_SIZE.observe(len(batch))
            BATCH_SECONDS.observe(time.perf_counter() - started)
            for request in batch:
                finish = request.finish or "abort"
                REQUESTS.labels(finish).inc()
                request.future.set_result(Generation(request.generated, request.logprobs, finish, version))

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> Any:
        kwargs: dict[str, Any] = {self._cache_kwarg: cache}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        return self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)

    def _prefill(self, batch: list[_Request]) -> tuple[Any, torch.Tensor, torch.Tensor, Any]:
        """Encode every row's prompt, reusing the KV states of a cached prefix where there is one.

        Rows are laid out as [left padding, cached prefix | padding, tokens to encode]: the input is as wide as
        the longest part any row has to encode, and a row with less to encode feeds some of its cached tokens again.
        Returns (model output, attention mask, next positions, cache).
        """
        device = self.device
        entries = [self._prefix.longest_prefix(r.prompt_ids) for r in batch]
        width = max(len(r.prompt_ids) - (len(e) if e else 0) for r, e in zip(batch, entries, strict=True))
        reused = [max(len(r.prompt_ids) - width, 0) for r in batch]
        past = max(reused)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(batch), past + width), dtype=torch.long, device=device)
        for i, (request, n) in enumerate(zip(batch, reused, strict=True)):
            fed = request.prompt_ids[n:]
            input_ids[i, width - len(fed) :] = torch.tensor(fed, dtype=torch.long, device=device)
            mask[i, past - n : past] = 1
            mask[i, past + width - len(fed) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        # Room for the whole batch: the cached prefix, the tokens to encode and the longest completion.
        cache = reserved_cache(self.model.config, capacity=past + width + max(r.max_new_tokens for r in batch))
        if past:
            some = next(e for e in entries if e is not None)
            for layer, (k0, v0) in enumerate(zip(some.keys, some.values, strict=True)):
                keys = k0.new_zeros((len(batch), k0.shape[0], past, k0.shape[-1]))
                values = v0.new_zeros((len(batch), v0.shape[0], past, v0.shape[-1]))
                for i, (entry, n) in enumerate(zip(entries, reused, strict=True)):
                    if entry is not None and n:
                        keys[i, :, past - n :] = entry.keys[layer][:, :n]
                        values[i, :, past - n :] = entry.values[layer][:, :n]
                cache.update(keys, values, layer)
        out = self._forward(input_ids, mask, positions, cache)
        return out, mask, positions[:, -1:] + 1, cache

    def _remember(self, batch: list[_Request], cache: Any, mask: torch.Tensor) -> None:
        """Cache each row's KV states for prompt + completion (all but the last token, which was never fed)."""
        for i, request in enumerate(batch):
            tokens = (*request.prompt_ids, *request.generated[:-1])
            where = mask[i].nonzero()[: len(tokens), 0]
            keys = tuple(layer.keys[i][:, where].clone() for layer in cache.layers)
            values = tuple(layer.values[i][:, where].clone() for layer in cache.layers)
            self._prefix.store(CachedPrefix(tokens, keys, values))

    @torch.inference_mode()
    def _decode(self, batch: list[_Request]) -> None:
        device = self.device
        out, mask, next_pos, cache = self._prefill(batch)
        while True:
            logits = out.logits[:, -1, :].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            tokens = self._sample(logits, batch)
            chosen = logprobs.gather(1, tokens[:, None])[:, 0].tolist()
            step = tokens[:, None].to(device)
            active = produced = 0
            for i, (request, token) in enumerate(zip(batch, tokens.tolist(), strict=True)):
                if request.finish is not None:
                    step[i, 0] = self.pad_token_id
                    continue
                produced += 1
                request.generated.append(token)
                request.logprobs.append(chosen[i])
                if token in request.stop_ids or token in self.eos_token_ids:
                    request.finish = "stop"
                elif len(request.generated) >= request.max_new_tokens or (
                    len(request.prompt_ids) + len(request.generated) >= self.max_model_len
                ):
                    request.finish = "length"
                else:
                    active += 1
            TOKENS_GENERATED.inc(produced)
            if active == 0:
                if self._prefix.max_entries:
                    self._remember(batch, cache, mask)
                return
            mask = torch.cat([mask, torch.ones((len(batch), 1), dtype=torch.long, device=device)], dim=1)
            out = self._forward(step, mask, next_pos, cache)
            next_pos = next_pos + 1

    @staticmethod
    def _sample(logits: torch.Tensor, batch: list[_Request]) -> torch.Tensor:
        """One token per row, all rows at once: argmax for greedy rows, otherwise inverse-CDF sampling of
        softmax(logits / temperature) after the row's top_k / top_p filter, with the row's own uniform draw
        (so a seeded request samples the same tokens whatever shares its batch)."""
        greedy = torch.argmax(logits, dim=-1)
        sampled = [i for i, r in enumerate(batch) if r.temperature > 0 and r.finish is None]
        if not sampled:
            return greedy
        rows = torch.tensor(sampled, dtype=torch.long, device=logits.device)
        temperature = torch.tensor([batch[i].temperature for i in sampled], device=logits.device)
        scaled = logits[rows] / temperature[:, None]
        for j, i in enumerate(sampled):  # filters are rare: per row
            request = batch[i]
            if 0 < request.top_k < scaled.shape[-1]:
                kth = torch.topk(scaled[j], request.top_k).values[-1]
                scaled[j] = scaled[j].masked_fill(scaled[j] < kth, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        for j, i in enumerate(sampled):
            top_p = batch[i].top_p
            if 0 < top_p < 1:
                sorted_probs, order = torch.sort(probs[j], descending=True)
                before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly above each token
                sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the top token always stays
                probs[j] = torch.zeros_like(probs[j]).scatter(-1, order, sorted_probs)
        cdf = torch.cumsum(probs, dim=-1)
        draws = torch.tensor([batch[i].rng.random() for i in sampled], device=logits.device, dtype=cdf.dtype)
        picked = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None], right=True)[:, 0]
        picked = picked.clamp(max=logits.shape[-1] - 1)
        return greedy.index_copy(0, rows, picked)
