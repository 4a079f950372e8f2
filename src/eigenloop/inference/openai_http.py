"""An OpenAI-compatible chat-completions endpoint over an inference engine (stdlib HTTP, same process).

Routes: `GET /v1/models`, `POST /v1/chat/completions` (non-streaming only; `stream: true` is a 400). The prompt is
the tokenizer's chat template over the messages (tools included); generation goes through the engine's batcher.
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks in the output become OpenAI `tool_calls` with
finish_reason "tool_calls".

A malformed block (bad JSON, no name, arguments not an object, unclosed) is never dropped: the response's
`finish_reason` is "malformed_tool_call", the message `content` keeps the raw text (the malformed block included,
well-formed blocks removed and returned as `tool_calls`), and the choice carries `eigenloop_error` saying why.
Every response also carries `eigenloop: {"policy_version", "completion_token_ids", "completion_logprobs"}`.

Defaults follow OpenAI: temperature 1.0, top_p 1.0; max_tokens defaults to the rest of the context.
Errors use OpenAI's body, `{"error": {"message", "type", "param", "code"}}`: 400 for bad JSON or fields, 404 for an
unknown route or model, 413 for a body over `max_body_bytes`, 503 when `max_concurrent` requests are in flight.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.inference.base import EngineClosedError, Generation, InferenceEngine, InvalidRequestError
from eigenloop.llm.base import BackendError, ChatMessage, ToolCallRequest, normalize_tools, to_template_messages
from eigenloop.llm.tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, parse_tool_calls

log = logging.getLogger(__name__)

MALFORMED_TOOL_CALL = "malformed_tool_call"
_ROLES = ("system", "user", "assistant", "tool")


class RequestError(ValueError):
    """A request the server refuses; carries the HTTP status and OpenAI's error type/param."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.param = param
        self.kind = kind


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _content_text(value: Any, where: str) -> str:
    """Message content: a string, null, or a list of `{"type": "text", "text": ...}` parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise RequestError(f"{where}: only text content parts are supported", param=where)
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"{where}: content must be a string, null or a list of text parts", param=where)


def parse_messages(raw: Any) -> list[ChatMessage]:
    """OpenAI chat messages → ChatMessages; RequestError (400) naming the bad field otherwise."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    out: list[ChatMessage] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise RequestError(f"{where} must be an object", param=where)
        role = m.get("role")
        if role not in _ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(_ROLES)}, got {role!r}", param=f"{where}.role")
        content = _content_text(m.get("content"), f"{where}.content")
        calls: list[ToolCallRequest] = []
        raw_calls = m.get("tool_calls") or []
        if not isinstance(raw_calls, list) or (raw_calls and role != "assistant"):
            raise RequestError(f"{where}.tool_calls must be a list, on assistant messages only", param=where)
        for j, c in enumerate(raw_calls):
            fn = c.get("function") if isinstance(c, Mapping) else None
            if not (isinstance(fn, Mapping) and isinstance(fn.get("name"), str)):
                raise RequestError(f"{where}.tool_calls[{j}] needs function.name", param=f"{where}.tool_calls")
            args = fn.get("arguments", "{}")
            calls.append(
                ToolCallRequest(
                    id=str(c.get("id") or f"call_{j}"),
                    name=fn["name"],
                    arguments_json=args if isinstance(args, str) else json.dumps(args),
                )
            )
        tool_call_id = m.get("tool_call_id", "")
        if role == "tool" and not isinstance(tool_call_id, str):
            raise RequestError(f"{where}.tool_call_id must be a string", param=f"{where}.tool_call_id")
        out.append(
            ChatMessage(
                role=role,
                content=content,
                tool_calls=tuple(calls),
                tool_call_id=tool_call_id if role == "tool" else "",
            )
        )
    return out


def _number(body: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise RequestError(f"'{key}' must be a number in [{lo:g}, {hi:g}], got {value!r}", param=key)
    return float(value)


def _integer(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{key}' must be an integer, got {value!r}", param=key)
    return value


def build_chat_response(
    text: str,
    generation: Generation,
    *,
    prompt_tokens: int,
    model: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The chat.completion body for the decoded `text` of `generation` (tool calls parsed out of it)."""
    parsed = parse_tool_calls(text)
    choice: dict[str, Any] = {"index": 0, "logprobs": None}
    message: dict[str, Any] = {"role": "assistant", "content": parsed.text or None}
    if parsed.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in parsed.tool_calls
        ]
    if parsed.malformed:
        finish = MALFORMED_TOOL_CALL
        choice["eigenloop_error"] = (
            f"malformed {TOOL_CALL_OPEN} block (invalid JSON, no name, arguments not an object, or not closed by "
            f"{TOOL_CALL_CLOSE}); the raw text is kept in content"
        )
    elif parsed.tool_calls:
        finish = "tool_calls"
    else:
        finish = "length" if generation.finish_reason == "length" else "stop"
    choice["message"] = message
    choice["finish_reason"] = finish
    completion_tokens = len(generation.token_ids)
    return {
        "id": request_id or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "eigenloop": {
            "policy_version": generation.policy_version,
            "completion_token_ids": generation.token_ids,
            "completion_logprobs": generation.logprobs,
        },
    }


class ChatFrontend:
    """Turns chat-completions request bodies into engine calls and response bodies (no HTTP here)."""

    def __init__(self, engine: InferenceEngine, model_name: str | None = None) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_name = model_name or engine.model_id
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise BackendError(f"the tokenizer in {engine.path} has no chat template")
        keep = {
            self.tokenizer.convert_tokens_to_ids(t)
            for t in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE)
            if t in self.tokenizer.get_vocab()
        }
        self._drop_ids = (set(self.tokenizer.all_special_ids) | set(engine.eos_token_ids)) - keep

    def models(self) -> dict[str, Any]:
        info = self.engine.info()
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": int(info.updated_at),
                    "owned_by": "eigenloop",
                    "max_model_len": info.max_model_len,
                    "policy_version": info.version,
                }
            ],
        }

    def render(self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None) -> list[int]:
        kwargs: dict[str, Any] = {"tools": normalize_tools(tools)} if tools else {}
        try:
            rendered = self.tokenizer.apply_chat_template(
                to_template_messages(messages), add_generation_prompt=True, tokenize=False, **kwargs
            )
        except Exception as err:  # jinja2 errors (raise_exception in templates) and friends
            raise RequestError(f"the chat template rejected the messages: {err}", param="messages") from err
        ids = self.tokenizer(str(rendered), add_special_tokens=False)["input_ids"]
        return [int(t) for t in ids]

    def chat(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise RequestError("the request body must be a JSON object")
        if body.get("stream"):
            raise RequestError("stream=true is not supported by this server; send stream=false", param="stream")
        model = body.get("model")
        if model is not None and model not in (self.model_name, self.engine.path):
            raise RequestError(
                f"model {model!r} is not served here; this server serves {self.model_name!r}",
                status=404,
                param="model",
                kind="model_not_found",
            )
        n = _integer(body, "n")
        if n not in (None, 1):
            raise RequestError("only n=1 is supported", param="n")
        messages = parse_messages(body.get("messages"))
        tools = body.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, Mapping) for t in tools)):
            raise RequestError("'tools' must be a list of tool objects", param="tools")
        temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
        top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
        max_tokens = _integer(body, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = _integer(body, "max_tokens")
        if max_tokens is not None and max_tokens < 1:
            raise RequestError(f"'max_tokens' must be >= 1, got {max_tokens}", param="max_tokens")
        seed = _integer(body, "seed")
        try:
            prompt_ids = self.render(messages, tools)
        except BackendError as err:  # normalize_tools
            raise RequestError(str(err), param="tools") from err
        params = pb.SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_tokens or 0)
        if seed is not None:
            params.seed = seed
        try:
            generation = self.engine.generate(prompt_ids, params)
        except InvalidRequestError as err:
            raise RequestError(str(err), param="max_tokens" if "max_new_tokens" in str(err) else "messages") from err
        except EngineClosedError as err:
            raise RequestError(str(err), status=503, kind="server_error") from err
        content_ids = [t for t in generation.token_ids if t not in self._drop_ids]
        text = str(self.tokenizer.decode(content_ids, skip_special_tokens=False))
        return build_chat_response(text, generation, prompt_tokens=len(prompt_ids), model=self.model_name)


class OpenAIHTTPServer:
    """The HTTP server thread. Bounded: body size, in-flight requests, and a per-connection socket timeout."""

    def __init__(
        self,
        frontend: ChatFrontend,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body_bytes: int = 4 * 1024 * 1024,
        max_concurrent: int = 64,
        socket_timeout_s: float = 60.0,
    ) -> None:
        self.frontend = frontend
        slots = threading.BoundedSemaphore(max_concurrent)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = socket_timeout_s
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http " + format, *args)

            def _send(self, status: int, body: Any) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _error(self, err: RequestError) -> None:
                self._send(err.status, error_body(str(err), err.kind, err.param))

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, outer.frontend.models())
                else:
                    self._error(RequestError(f"no route GET {self.path}", status=404, kind="not_found"))

            def do_POST(self) -> None:
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self.close_connection = True
                    self._error(RequestError("a Content-Length header is required", status=411))
                    return
                if length > max_body_bytes or length < 0:
                    self.close_connection = True
                    self._error(RequestError(f"request body over {max_body_bytes} bytes", status=413))
                    return
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._error(RequestError(f"no route POST {self.path}", status=404, kind="not_found"))
                    return
                if not slots.acquire(blocking=False):
                    self._error(RequestError("server busy; retry later", status=503, kind="server_error"))
                    return
                try:
                    try:
                        body = json.loads(raw)
                    except ValueError as err:
                        raise RequestError(f"the request body is not valid JSON: {err}") from err
                    self._send(200, outer.frontend.chat(body))
                except RequestError as err:
                    self._error(err)
                except Exception as err:
                    log.exception("chat completion failed")
                    self._error(RequestError(f"internal error: {err}", status=500, kind="server_error"))
                finally:
                    slots.release()

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="openai-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> OpenAIHTTPServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
