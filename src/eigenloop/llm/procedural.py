"""The procedural backend: an offline, deterministic ChatBackend for the generator's agents and evolution.

It answers the same briefs an LLM backend gets (a system prompt, then `BRIEF:` and a JSON object naming the
agent, the domain, its settings, a seed and its input) with JSON computed from the domain's scenario samplers,
tool schemas and reference procedures (see procedural_writers). Same brief, same answer. Everything it writes
is labelled `procedural` (Completion.backend, and the tasks' provenance).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from eigenloop.llm.base import BackendError, ChatMessage, Completion, Usage

BRIEF_MARK = "BRIEF:"
NAME = "procedural"


def brief_message(brief: dict[str, Any]) -> str:
    """The user message that carries a brief (what every backend receives after the agent's prompt)."""
    return f"{BRIEF_MARK}\n{json.dumps(brief, sort_keys=True)}"


def read_brief(messages: Sequence[ChatMessage]) -> dict[str, Any]:
    for message in reversed(messages):
        if message.role == "user" and message.content.startswith(BRIEF_MARK):
            try:
                brief = json.loads(message.content[len(BRIEF_MARK) :])
            except json.JSONDecodeError as exc:
                raise BackendError(f"procedural backend: the brief is not JSON: {exc}") from None
            if isinstance(brief, dict):
                return brief
    raise BackendError(f"procedural backend: no user message starting with {BRIEF_MARK!r}; it only answers briefs")


class ProceduralBackend:
    name = NAME

    def __init__(self) -> None:
        self.usage = Usage()

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
    ) -> Completion:
        from eigenloop.llm.procedural_writers import BriefError, answer

        brief = read_brief(messages)
        try:
            text = json.dumps(answer(brief), sort_keys=True)
        except BriefError as exc:
            raise BackendError(f"procedural backend: {exc}") from None
        completion = Completion(
            text=text,
            tool_calls=(),
            finish_reason="stop",
            # Word counts stand in for tokens: there is no tokenizer, and cost accounting only needs a size.
            prompt_tokens=sum(len(m.content.split()) for m in messages),
            completion_tokens=len(text.split()),
            backend=NAME,
        )
        self.usage.add(completion)
        return completion
