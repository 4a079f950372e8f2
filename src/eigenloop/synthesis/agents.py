"""How a generator or evolution agent asks its backend: prompt + brief in, JSON out, retried, then a clear failure."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from eigenloop.llm.base import BackendError, ChatBackend, ChatMessage
from eigenloop.llm.procedural import brief_message


class AgentFailure(Exception):
    """An agent produced nothing usable; `agent` is who failed, the message says why (recorded, never raised out)."""

    def __init__(self, agent: str, reason: str) -> None:
        super().__init__(f"{agent}: {reason}")
        self.agent = agent
        self.reason = reason


@dataclass(frozen=True)
class RetryPolicy:
    """Backend calls are retried (errors, timeouts, answers that are not a JSON object) this many times in all."""

    attempts: int = 3
    backoff_s: float = 0.2


def ask(
    backend: ChatBackend,
    agent: str,
    prompt: str,
    brief: dict[str, Any],
    retry: RetryPolicy,
    *,
    max_tokens: int = 4096,
) -> dict[str, Any]:
    """The agent's JSON answer to `brief`; AgentFailure after `retry.attempts` failed tries."""
    messages = [ChatMessage("system", prompt), ChatMessage("user", brief_message({**brief, "agent": agent}))]
    problem = ""
    for attempt in range(retry.attempts):
        if attempt:
            time.sleep(retry.backoff_s * 2 ** (attempt - 1))
        try:
            completion = backend.complete(messages, temperature=0.0, max_tokens=max_tokens, seed=int(brief["seed"]))
        except BackendError as exc:
            problem = str(exc)
            continue
        except TimeoutError as exc:
            problem = f"timed out: {exc}"
            continue
        try:
            answer = json.loads(completion.text)
        except json.JSONDecodeError as exc:
            problem = f"the answer is not JSON ({exc}): {completion.text[:120]!r}"
            continue
        if isinstance(answer, dict):
            return answer
        problem = f"the answer is not a JSON object: {completion.text[:120]!r}"
    raise AgentFailure(agent, f"{problem} (after {retry.attempts} attempts)")
