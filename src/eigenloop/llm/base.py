"""The one chat interface every LLM-driven component (generator, validator judges, user simulator) uses."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCallRequest:
    """A tool call the model asked for (OpenAI's `tool_calls` entry, or a parsed `<tool_call>` block)."""

    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCallRequest, ...] = ()
    # For role "tool": which call this answers.
    tool_call_id: str = ""


@dataclass(frozen=True)
class Completion:
    text: str
    tool_calls: tuple[ToolCallRequest, ...]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    # The backend that produced it, e.g. "openai:gpt-4o-mini", "transformers:/models/user-sft".
    backend: str


@dataclass
class Usage:
    """Token and cost accounting, accumulated across threads."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, completion: Completion, cost_usd: float = 0.0, retries: int = 0) -> None:
        with self._lock:
            self.calls += 1
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens
            self.cost_usd += cost_usd
            self.retries += retries


class BackendError(RuntimeError):
    """The backend could not produce a completion (after its retries); the message says why."""


class ChatBackend(Protocol):
    name: str
    usage: Usage

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
    ) -> Completion: ...
