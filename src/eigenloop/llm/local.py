"""ChatBackend over a local causal LM (transformers), for trained checkpoints and tests without a server.

The prompt is the tokenizer's own chat template (tools passed through); decoding is a plain KV-cached loop so
sampling can use a `torch.Generator` seeded per call (greedy at temperature 0). Tool calls are read back out of the
generated text in the Qwen/Hermes convention: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from eigenloop.llm.base import (
    BackendError,
    ChatMessage,
    Completion,
    Usage,
    normalize_tools,
    to_template_messages,
)
from eigenloop.llm.tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ParsedToolCalls, parse_tool_calls

__all__ = [
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "ParsedToolCalls",
    "TransformersBackend",
    "load_tokenizer_and_model",
    "parse_tool_calls",
]


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


def _as_id_set(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


class TransformersBackend:
    """A ChatBackend for one local model. Thread-safe: generation is serialised by a lock (one model, many threads)."""

    def __init__(self, path: str | Path, *, device: str | None = None) -> None:
        self.path = str(path)
        self.name = f"transformers:{self.path}"
        self.usage = Usage()
        self.tokenizer, self.model = load_tokenizer_and_model(path, device=device)
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise BackendError(f"the tokenizer in {self.path} has no chat template")
        self.eos_token_ids = _as_id_set(self.tokenizer.eos_token_id) | _as_id_set(
            getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        )
        # Special tokens are dropped from the decoded text, except the tool-call markers (some tokenizers mark them).
        keep = {
            self.tokenizer.convert_tokens_to_ids(t)
            for t in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE)
            if t in self.tokenizer.get_vocab()
        }
        self._drop_ids = set(self.tokenizer.all_special_ids) - keep
        # transformers 5.x renamed the forward's `past_key_values` to `cache` (the old name warns, then goes away).
        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device  # type: ignore[no-any-return]

    def render_prompt(self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None) -> str:
        """The prompt text the chat template makes of `messages` (+ tools), ending in the generation prompt."""
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = normalize_tools(tools)
        try:
            rendered = self.tokenizer.apply_chat_template(
                to_template_messages(messages), add_generation_prompt=True, tokenize=False, **kwargs
            )
        except Exception as err:  # jinja2 errors (raise_exception in templates) and friends
            raise BackendError(f"{self.name}: chat template failed: {err}") from err
        if not isinstance(rendered, str):
            raise BackendError(f"{self.name}: chat template returned {type(rendered).__name__}, not text")
        return rendered

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
    ) -> Completion:
        if max_tokens < 1:
            raise BackendError(f"max_tokens must be >= 1, got {max_tokens}")
        if temperature < 0:
            raise BackendError(f"temperature must be >= 0, got {temperature}")
        prompt = self.render_prompt(messages, tools)
        with self._lock:
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
            generated, hit_eos = self._generate(prompt_ids.to(self.device), temperature, max_tokens, seed)
        prompt_tokens = int(prompt_ids.shape[1])
        content_ids = [t for t in generated if t not in self._drop_ids and t not in self.eos_token_ids]
        raw = self.tokenizer.decode(content_ids, skip_special_tokens=False)
        parsed = parse_tool_calls(str(raw))
        if parsed.malformed:
            finish = "malformed_tool_call"
        elif parsed.tool_calls:
            finish = "tool_calls"
        else:
            finish = "stop" if hit_eos else "length"
        completion = Completion(
            text=parsed.text,
            tool_calls=parsed.tool_calls,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(generated),
            backend=self.name,
        )
        self.usage.add(completion)
        return completion

    @torch.inference_mode()
    def _generate(
        self, input_ids: torch.Tensor, temperature: float, max_tokens: int, seed: int | None
    ) -> tuple[list[int], bool]:
        """Token ids generated after `input_ids` (EOS included when hit), and whether EOS was hit."""
        generator: torch.Generator | None = None
        if temperature > 0:
            generator = torch.Generator(device=input_ids.device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
        try:
            cache = DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            cache = DynamicCache()
        kv = {self._cache_kwarg: cache}  # filled in place by every forward
        out = self.model(input_ids=input_ids, use_cache=True, **kv)
        generated: list[int] = []
        while True:
            logits = out.logits[0, -1, :].float()
            if generator is None:
                next_id = int(torch.argmax(logits).item())
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                next_id = int(torch.multinomial(probs, 1, generator=generator).item())
            generated.append(next_id)
            if next_id in self.eos_token_ids:
                return generated, True
            if len(generated) >= max_tokens:
                return generated, False
            step = torch.tensor([[next_id]], device=input_ids.device)
            out = self.model(input_ids=step, use_cache=True, **kv)
