"""ChatBackend over a local causal LM (transformers), for trained checkpoints and tests without a server.

The prompt is the tokenizer's own chat template (tools passed through). Decoding is the inference engine's batched,
KV-cached loop: greedy at temperature 0; seeded sampling reproducible per call, whatever else shares the batch.
Tool calls are read back out of the generated text in the Qwen/Hermes convention:
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.inference.base import EngineClosedError, InvalidRequestError
from eigenloop.inference.engine import TransformersEngine
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
    "parse_tool_calls",
]


class TransformersBackend:
    """A ChatBackend for one local model. Thread-safe, and concurrent calls are decoded together: generation runs
    on the inference engine's dynamic batcher (eigenloop.inference.engine), so a user_sim serving many
    conversations with a small model does one batched forward per token instead of one per conversation."""

    def __init__(self, path: str | Path, *, device: str | None = None, max_batch_size: int = 64) -> None:
        self.path = str(path)
        self.name = f"transformers:{self.path}"
        self.usage = Usage()
        self.engine = TransformersEngine(path, device=device, max_batch_size=max_batch_size, batch_window_ms=2.0)
        self.tokenizer, self.model = self.engine.tokenizer, self.engine.model
        if getattr(self.tokenizer, "chat_template", None) is None:
            self.engine.close()
            raise BackendError(f"the tokenizer in {self.path} has no chat template")
        self.eos_token_ids = set(self.engine.eos_token_ids)
        # Special tokens are dropped from the decoded text, except the tool-call markers (some tokenizers mark them).
        keep = {
            self.tokenizer.convert_tokens_to_ids(t)
            for t in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE)
            if t in self.tokenizer.get_vocab()
        }
        self._drop_ids = set(self.tokenizer.all_special_ids) - keep

    def close(self) -> None:
        self.engine.close()

    @property
    def device(self) -> Any:
        return self.engine.device

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
        prompt_ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        generated, hit_eos = self._generate(prompt_ids, temperature, max_tokens, seed)
        prompt_tokens = len(prompt_ids)
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

    def _generate(
        self, prompt_ids: list[int], temperature: float, max_tokens: int, seed: int | None
    ) -> tuple[list[int], bool]:
        """Token ids generated after `prompt_ids` (EOS included when hit), and whether EOS was hit."""
        room = self.engine.max_model_len - len(prompt_ids)
        if room < 1:
            raise BackendError(f"{self.name}: a prompt of {len(prompt_ids)} tokens fills the model's context")
        params = pb.SamplingParams(temperature=temperature, max_new_tokens=min(max_tokens, room))
        if seed is not None:
            params.seed = seed
        try:
            generation = self.engine.generate(prompt_ids, params)
        except (InvalidRequestError, EngineClosedError) as err:
            raise BackendError(f"{self.name}: {err}") from err
        return list(generation.token_ids), generation.finish_reason == "stop"
