"""ChatBackend over any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, hosted APIs).

The official `openai` client does the HTTP; it is created with `max_retries=0` and this module does the retrying, so
that backoff is deterministic (seeded jitter), `Retry-After` is honoured, retries are counted in `usage`, and the
final error names the endpoint and the attempt count.
"""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import openai

from eigenloop.llm.base import BackendError, ChatMessage, Completion, ToolCallRequest, Usage, normalize_tools


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """ChatMessages in the chat-completions wire format (assistant `tool_calls`, `tool` results with `tool_call_id`)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    # Most servers accept null content next to tool calls; some reject "", none reject null.
                    "content": m.content or None,
                    "tool_calls": [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                        for c in m.tool_calls
                    ],
                }
            )
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _retry_after_s(err: openai.APIStatusError) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `Retry-After` as seconds or an HTTP date), if any."""
    headers = err.response.headers
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
        return json.dumps(body, default=str)
    if isinstance(body, str) and body:
        return body
    return err.message


def _is_retryable_status(status: int) -> bool:
    # 408 is the server's own request timeout: retried like a client-side one.
    return status in (408, 429) or status >= 500


class OpenAIBackend:
    """A ChatBackend for one model behind one OpenAI-compatible base URL. Thread-safe: share one per endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        timeout_s: float = 60.0,
        max_retries: int = 4,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        price_per_1k_prompt: float = 0.0,
        price_per_1k_completion: float = 0.0,
        *,
        jitter_seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.price_per_1k_prompt = price_per_1k_prompt
        self.price_per_1k_completion = price_per_1k_completion
        self.name = f"openai:{model}"
        self.usage = Usage()
        self._sleep = sleep
        self._rng = random.Random(jitter_seed)
        self._rng_lock = threading.Lock()
        # The client (an httpx connection pool) is safe to share across threads.
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backoff_s(self, retry: int) -> float:
        """Delay before retry number `retry` (0-based): exponential, capped, with seeded 'equal jitter'."""
        base = min(self.max_backoff_s, self.initial_backoff_s * (2.0**retry))
        with self._rng_lock:
            u = self._rng.random()
        return base / 2.0 + u * base / 2.0

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
    ) -> Completion:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(messages),
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if tools:
            request["tools"] = normalize_tools(tools)
        if seed is not None:
            request["seed"] = seed

        attempts = 0
        while True:
            attempts += 1
            wait: float | None = None
            try:
                response = self._client.chat.completions.create(**request)
            except openai.APIStatusError as err:
                status = err.status_code
                if not _is_retryable_status(status):
                    raise BackendError(
                        f"{self.base_url} rejected the request for {self.model} (HTTP {status}): {_server_message(err)}"
                    ) from err
                last = f"HTTP {status}: {_server_message(err)}"
                # Sent with 429 (and sometimes 503): the server's wait wins over our own backoff.
                wait = _retry_after_s(err)
                last_err: Exception = err
            except openai.APITimeoutError as err:
                last, last_err = f"timed out after {self.timeout_s:g}s", err
            except openai.APIConnectionError as err:
                cause = err.__cause__
                last, last_err = f"connection error: {cause or err}", err
            except openai.OpenAIError as err:
                # Undecodable or schema-violating responses: a server bug that a retry will not fix.
                raise BackendError(f"{self.base_url}: bad response for {self.model}: {err}") from err
            else:
                try:
                    completion, cost = self._parse(response)
                except (AttributeError, TypeError, ValueError, IndexError) as err:
                    raise BackendError(f"{self.base_url}: unparseable response for {self.model}: {err!r}") from err
                self.usage.add(completion, cost_usd=cost, retries=attempts - 1)
                return completion

            if attempts > self.max_retries:
                raise BackendError(
                    f"{self.base_url}: chat completion for {self.model} failed after {attempts} attempt(s); "
                    f"last error: {last}"
                ) from last_err
            delay = self.backoff_s(attempts - 1) if wait is None else min(wait, self.max_backoff_s)
            self._sleep(delay)

    def _parse(self, response: Any) -> tuple[Completion, float]:
        if not response.choices:
            raise BackendError(f"{self.base_url}: response for {self.model} has no choices")
        choice = response.choices[0]
        message = choice.message
        calls: list[ToolCallRequest] = []
        for i, call in enumerate(message.tool_calls or ()):
            function = getattr(call, "function", None)
            if function is not None:
                calls.append(
                    ToolCallRequest(
                        id=call.id or f"call_{i}", name=function.name, arguments_json=function.arguments or "{}"
                    )
                )
            else:  # a "custom" (free-text) tool call
                custom = call.custom
                calls.append(ToolCallRequest(id=call.id or f"call_{i}", name=custom.name, arguments_json=custom.input))
        usage = response.usage
        prompt_tokens = int(usage.prompt_tokens) if usage is not None else 0
        completion_tokens = int(usage.completion_tokens) if usage is not None else 0
        completion = Completion(
            text=message.content or "",
            tool_calls=tuple(calls),
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            backend=self.name,
        )
        cost = (
            prompt_tokens / 1000.0 * self.price_per_1k_prompt
            + completion_tokens / 1000.0 * self.price_per_1k_completion
        )
        return completion, cost
