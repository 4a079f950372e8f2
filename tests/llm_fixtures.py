"""Test doubles for the LLM backends: a fake OpenAI-compatible HTTP server and a tiny local Qwen2 checkpoint.

Both are offline: the server binds 127.0.0.1, and the model's tokenizer is trained here from synthetic lines.
torch/transformers/tokenizers are imported only by `build_tiny_chat_model`.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------------------------
# Fake OpenAI-compatible server
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FakeResponse:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def chat_body(
    content: str | None = "hello",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    model: str = "fake-model",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def text_response(content: str | None = "hello", **kw: Any) -> FakeResponse:
    return FakeResponse(200, chat_body(content, **kw))


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> FakeResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return FakeResponse(status, body, headers or {})


@dataclass
class SeenRequest:
    at: float
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any


class FakeOpenAIServer:
    """Serves POST /v1/chat/completions from a queue of FakeResponses (then `default`), recording every request.

    Bounded: handler threads are daemons, delays wake early on `close()`, and `close()` stops the listener.
    """

    def __init__(self, default: FakeResponse | None = None) -> None:
        self.default = default or text_response()
        self.queue: deque[FakeResponse] = deque()
        self.requests: list[SeenRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a handler thread forever

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with server._lock:
                    server.requests.append(
                        SeenRequest(time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    response = server.queue.popleft() if server.queue else server.default
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    if self.path != "/v1/chat/completions":
                        response = error_response(404, f"no route {self.path}")
                    if response.delay_s:
                        server._stop.wait(response.delay_s)
                    payload = json.dumps(response.body).encode()
                    self.send_response(response.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in response.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with server._lock:
                        server._in_flight -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def push(self, *responses: FakeResponse) -> None:
        with self._lock:
            self.queue.extend(responses)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------------------------
# Tiny local chat model
# ---------------------------------------------------------------------------------------------------------------

_WORDS = [
    *("the", "user", "wants", "to", "book", "a", "flight", "cancel", "order", "refund", "check", "status", "of"),
    *("mobile", "data", "plan", "please", "help", "me", "with", "my", "account", "roaming", "bill", "overdue"),
    *("payment", "address", "exchange", "item", "return", "delivered", "pending"),
]


def synthetic_lines(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]
    lines += [json.dumps({"name": "get_order", "arguments": {"order_id": f"#W{i:04d}"}}) for i in range(20)]
    return lines


def build_tiny_chat_model(
    out_dir: Path, *, seed: int = 0, vocab_size: int = 400, max_position_embeddings: int = 1024
) -> Path:
    """Write a tokenizer (eigenloop.models: byte-level BPE, ChatML specials, the chat template) and a random 2-layer
    Qwen2 to `out_dir`.

    The LM head row of EOS is zeroed, so greedy decoding (some logit is > 0 with overwhelming probability) never
    picks EOS and always runs to max_tokens; EOS is token id 0.
    """
    import torch

    from eigenloop.models import ModelPreset, build_model, save_model, train_tokenizer

    tokenizer = train_tokenizer(synthetic_lines(seed=seed), vocab_size)
    assert tokenizer.eos_token_id == 0
    model = build_model(
        ModelPreset(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64
        ),
        tokenizer,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        seed=seed,
    )
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    return save_model(out_dir, tokenizer, model)
