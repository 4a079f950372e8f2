"""The one chat interface every LLM-driven component (generator, validator judges, user simulator) uses."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
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


def normalize_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tool specs in OpenAI form, `{"type": "function", "function": {"name", "description", "parameters"}}`,
    which chat templates expect too. Accepts that form or a bare function spec (wrapped)."""
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if tool.get("type") == "function" and isinstance(tool.get("function"), Mapping):
            out.append({"type": "function", "function": dict(tool["function"])})
        elif isinstance(tool.get("name"), str):
            out.append({"type": "function", "function": dict(tool)})
        else:
            raise BackendError(
                f"tool spec #{i} is neither {{'type': 'function', 'function': {{...}}}} nor has a 'name'"
            )
    return out


def _arguments_for_template(arguments_json: str) -> Any:
    # HF chat templates (Qwen's included) expect arguments as a mapping and `tojson` them.
    try:
        return json.loads(arguments_json)
    except json.JSONDecodeError:
        return arguments_json


def to_template_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """ChatMessages as the dicts `apply_chat_template` takes (HF's tool-calling convention)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": _arguments_for_template(c.arguments_json)},
                }
                for c in m.tool_calls
            ]
        if m.role == "tool":
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out
