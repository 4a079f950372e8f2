"""The LLM backends: OpenAI-compatible HTTP (against a fake server), a tiny local transformers model, the factory."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from eigenloop.llm.base import BackendError, ChatMessage, ToolCallRequest
from eigenloop.llm.factory import BackendConfig, make_backend
from eigenloop.llm.local import TransformersBackend, parse_tool_calls
from eigenloop.llm.openai_backend import OpenAIBackend
from tests.llm_fixtures import (
    FakeOpenAIServer,
    FakeResponse,
    build_tiny_chat_model,
    error_response,
    text_response,
)

GET_ORDER = {
    "name": "get_order",
    "description": "Look an order up",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
}
CANCEL = {"type": "function", "function": {"name": "cancel_order", "parameters": {"type": "object"}}}

HISTORY = (
    ChatMessage("system", "You are a retail agent."),
    ChatMessage("user", "Where is order #W0001?"),
    ChatMessage("assistant", "", tool_calls=(ToolCallRequest("call_a", "get_order", '{"order_id": "#W0001"}'),)),
    ChatMessage("tool", '{"status": "pending"}', tool_call_id="call_a"),
)

# ---------------------------------------------------------------------------------------------------------------
# OpenAI-compatible backend
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def server() -> Iterator[FakeOpenAIServer]:
    s = FakeOpenAIServer().start()
    try:
        yield s
    finally:
        s.close()


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(seconds)


def make_openai(server: FakeOpenAIServer, **kw: Any) -> OpenAIBackend:
    args: dict[str, Any] = {"timeout_s": 5.0, "initial_backoff_s": 0.01, "max_backoff_s": 0.05}
    args.update(kw)
    return OpenAIBackend(server.base_url, "fake-model", **args)


def test_openai_text_completion_usage_and_cost(server: FakeOpenAIServer) -> None:
    server.push(text_response("hi there", prompt_tokens=1000, completion_tokens=500))
    backend = make_openai(server, api_key="sk-test", price_per_1k_prompt=0.5, price_per_1k_completion=1.5)
    c = backend.complete([ChatMessage("user", "hello")], temperature=0.7, max_tokens=64, seed=3)

    assert (c.text, c.tool_calls, c.finish_reason) == ("hi there", (), "stop")
    assert (c.prompt_tokens, c.completion_tokens, c.backend) == (1000, 500, "openai:fake-model")
    assert backend.name == "openai:fake-model"
    u = backend.usage
    assert (u.calls, u.prompt_tokens, u.completion_tokens, u.retries) == (1, 1000, 500, 0)
    assert u.cost_usd == pytest.approx(0.5 + 0.75)

    [req] = server.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.body["model"] == "fake-model"
    assert req.body["messages"] == [{"role": "user", "content": "hello"}]
    assert (req.body["temperature"], req.body["max_tokens"], req.body["seed"]) == (0.7, 64, 3)
    assert "tools" not in req.body


def test_openai_tool_call_round_trip(server: FakeOpenAIServer) -> None:
    server.push(
        text_response(
            None,
            tool_calls=[
                {"id": "call_x", "type": "function", "function": {"name": "cancel_order", "arguments": '{"a": 1}'}},
                {"id": "call_y", "type": "function", "function": {"name": "get_order", "arguments": "{}"}},
            ],
            finish_reason="tool_calls",
        )
    )
    backend = make_openai(server)
    c = backend.complete(HISTORY, tools=[GET_ORDER, CANCEL])

    assert c.text == ""
    assert c.finish_reason == "tool_calls"
    assert c.tool_calls == (
        ToolCallRequest("call_x", "cancel_order", '{"a": 1}'),
        ToolCallRequest("call_y", "get_order", "{}"),
    )
    body = server.requests[0].body
    assert body["tools"] == [{"type": "function", "function": GET_ORDER}, CANCEL]  # bare spec wrapped
    assert body["messages"] == [
        {"role": "system", "content": "You are a retail agent."},
        {"role": "user", "content": "Where is order #W0001?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_order", "arguments": '{"order_id": "#W0001"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"status": "pending"}'},
    ]


def test_openai_429_is_retried_after_retry_after(server: FakeOpenAIServer) -> None:
    server.push(error_response(429, "slow down", {"Retry-After": "0.1"}), text_response("ok"))
    sleep = SleepRecorder()
    # A large own backoff: had Retry-After been ignored, the recorded delay would be >= 2.5 s.
    backend = make_openai(server, initial_backoff_s=5.0, max_backoff_s=10.0, sleep=sleep)
    c = backend.complete([ChatMessage("user", "hi")])

    assert c.text == "ok"
    assert sleep.delays == [pytest.approx(0.1)]
    first, second = server.requests
    assert second.at - first.at >= 0.09
    assert backend.usage.retries == 1 and backend.usage.calls == 1


def test_openai_500_twice_then_success_with_seeded_backoff(server: FakeOpenAIServer) -> None:
    server.push(error_response(500, "boom"), error_response(502, "bad gateway"), text_response("ok"))
    sleep = SleepRecorder()
    backend = make_openai(server, initial_backoff_s=0.02, max_backoff_s=0.03, sleep=sleep, jitter_seed=11)
    c = backend.complete([ChatMessage("user", "hi")])

    assert c.text == "ok"
    assert len(server.requests) == 3
    assert backend.usage.retries == 2
    # Exponential (0.02, then 0.04 capped at 0.03) with "equal jitter" in [base/2, base] ...
    assert 0.01 <= sleep.delays[0] <= 0.02 and 0.015 <= sleep.delays[1] <= 0.03
    # ... and the jitter is deterministic for a given seed.
    twin = make_openai(server, initial_backoff_s=0.02, max_backoff_s=0.03, jitter_seed=11)
    assert [twin.backoff_s(0), twin.backoff_s(1)] == sleep.delays


def test_openai_timeout_then_success(server: FakeOpenAIServer) -> None:
    server.push(FakeResponse(200, text_response("late").body, delay_s=3.0), text_response("on time"))
    backend = make_openai(server, timeout_s=0.3)
    t0 = time.monotonic()
    c = backend.complete([ChatMessage("user", "hi")])

    assert c.text == "on time"
    assert time.monotonic() - t0 < 2.0
    assert backend.usage.retries == 1


def test_openai_400_is_not_retried(server: FakeOpenAIServer) -> None:
    server.push(error_response(400, "max_tokens is too large: 99999"), text_response("never"))
    backend = make_openai(server)
    with pytest.raises(BackendError, match=r"HTTP 400.*max_tokens is too large: 99999") as info:
        backend.complete([ChatMessage("user", "hi")], max_tokens=99999)

    assert server.base_url in str(info.value)
    assert len(server.requests) == 1
    assert (backend.usage.calls, backend.usage.retries) == (0, 0)


@pytest.mark.parametrize("body", [{"nonsense": 1}, "not json", {"choices": []}, {"choices": [{"index": 0}]}])
def test_openai_garbage_200_raises_backend_error(server: FakeOpenAIServer, body: Any) -> None:
    server.push(FakeResponse(200, body))
    with pytest.raises(BackendError, match="response for fake-model"):
        make_openai(server).complete([ChatMessage("user", "hi")])
    assert len(server.requests) == 1


def test_openai_exhausted_retries_name_endpoint_and_attempts(server: FakeOpenAIServer) -> None:
    server.push(*(error_response(503, "overloaded") for _ in range(3)), text_response("too late"))
    backend = make_openai(server, max_retries=2)
    with pytest.raises(BackendError) as info:
        backend.complete([ChatMessage("user", "hi")])

    msg = str(info.value)
    assert server.base_url in msg and "3 attempt" in msg and "HTTP 503: overloaded" in msg
    assert len(server.requests) == 3
    assert backend.usage.calls == 0


def test_openai_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    backend = OpenAIBackend(base_url, "m", max_retries=1, initial_backoff_s=0.01, max_backoff_s=0.01)
    with pytest.raises(BackendError, match=r"2 attempt.*connection error") as info:
        backend.complete([ChatMessage("user", "hi")])
    assert base_url in str(info.value)


def test_openai_concurrent_calls_from_8_threads(server: FakeOpenAIServer) -> None:
    server.default = FakeResponse(200, text_response("ok", prompt_tokens=7, completion_tokens=3).body, delay_s=0.1)
    server.push(error_response(500, "first one fails"))  # one of the threads retries
    backend = make_openai(server, price_per_1k_prompt=1.0, price_per_1k_completion=2.0)
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results.append(backend.complete([ChatMessage("user", f"q{i}")]).text)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)

    assert not errors
    assert results == ["ok"] * 8
    u = backend.usage
    assert (u.calls, u.prompt_tokens, u.completion_tokens, u.retries) == (8, 56, 24, 1)
    assert u.cost_usd == pytest.approx(8 * (0.007 + 0.006))
    assert len(server.requests) == 9
    assert server.max_in_flight >= 2  # the calls overlapped: no global lock around HTTP


# ---------------------------------------------------------------------------------------------------------------
# <tool_call> parsing (no model)
# ---------------------------------------------------------------------------------------------------------------


def test_parse_single_tool_call() -> None:
    p = parse_tool_calls(
        'I will check.\n<tool_call>\n{"name": "get_order", "arguments": {"order_id": "#W1"}}\n</tool_call>'
    )
    assert p.text == "I will check."
    assert p.tool_calls == (ToolCallRequest("call_0", "get_order", '{"order_id": "#W1"}'),)
    assert not p.malformed


def test_parse_multiple_tool_calls_and_string_arguments() -> None:
    p = parse_tool_calls(
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "b", "arguments": "{\\"x\\": [1, 2]}"}</tool_call>'
        '<tool_call>{"name": "c"}</tool_call>'
    )
    assert p.text == ""
    assert [(c.id, c.name, json.loads(c.arguments_json)) for c in p.tool_calls] == [
        ("call_0", "a", {}),
        ("call_1", "b", {"x": [1, 2]}),
        ("call_2", "c", {}),
    ]
    assert not p.malformed


@pytest.mark.parametrize(
    "block",
    [
        '<tool_call>{"name": "a", "arguments": {</tool_call>',  # bad JSON
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": "a", "arguments": [1]}</tool_call>',  # arguments not an object
        '<tool_call>["a"]</tool_call>',  # not an object
        '<tool_call>{"name": "a", "arguments": {}}',  # unclosed (cut by max_tokens)
    ],
)
def test_parse_malformed_block_stays_in_text(block: str) -> None:
    p = parse_tool_calls(f'ok <tool_call>{{"name": "good", "arguments": {{"k": 1}}}}</tool_call> {block}')
    assert p.malformed
    assert p.tool_calls == (ToolCallRequest("call_0", "good", '{"k": 1}'),)
    assert p.text == f"ok  {block}"


def test_parse_plain_text() -> None:
    p = parse_tool_calls("  just words  ")
    assert (p.text, p.tool_calls, p.malformed) == ("just words", (), False)


# ---------------------------------------------------------------------------------------------------------------
# Local transformers backend (tiny random Qwen2)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="module")
def local(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(tiny_model_dir)


USER = [ChatMessage("user", "please cancel my order")]


def test_local_greedy_is_deterministic_and_counts_tokens(local: TransformersBackend, tiny_model_dir: Path) -> None:
    before = local.usage.calls, local.usage.prompt_tokens, local.usage.completion_tokens
    a = local.complete(USER, max_tokens=12)
    b = local.complete(USER, max_tokens=12)
    assert a == b
    assert local.name == f"transformers:{tiny_model_dir}" == a.backend
    # The tiny model's EOS logit is pinned at 0, so greedy decoding runs to max_tokens.
    assert (a.completion_tokens, a.finish_reason) == (12, "length")
    prompt = local.render_prompt(USER)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert a.prompt_tokens == len(local.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    after = local.usage.calls, local.usage.prompt_tokens, local.usage.completion_tokens
    assert [x - y for x, y in zip(after, before, strict=True)] == [2, 2 * a.prompt_tokens, 24]


def test_local_greedy_matches_hf_generate(local: TransformersBackend) -> None:
    ids = local.tokenizer(local.render_prompt(USER), add_special_tokens=False, return_tensors="pt")["input_ids"]
    ours, hit_eos = local._generate(ids[0].tolist(), 0.0, 10, None)
    theirs = local.model.generate(
        ids, attention_mask=ids.new_ones(ids.shape), do_sample=False, max_new_tokens=10, pad_token_id=1
    )
    assert not hit_eos
    assert ours == theirs[0, ids.shape[1] :].tolist()


def test_local_sampling_is_reproducible_per_seed(local: TransformersBackend) -> None:
    a = local.complete(USER, temperature=1.0, max_tokens=16, seed=7)
    b = local.complete(USER, temperature=1.0, max_tokens=16, seed=7)
    c = local.complete(USER, temperature=1.0, max_tokens=16, seed=8)
    greedy = local.complete(USER, max_tokens=16)
    assert a == b
    assert a.text != c.text
    assert a.text != greedy.text


@pytest.mark.parametrize(("temperature", "max_tokens"), [(0.0, 1), (0.0, 5), (1.3, 3), (1.3, 20)])
def test_local_respects_max_tokens(local: TransformersBackend, temperature: float, max_tokens: int) -> None:
    c = local.complete(USER, temperature=temperature, max_tokens=max_tokens, seed=1)
    assert c.completion_tokens <= max_tokens
    if c.finish_reason == "length":
        assert c.completion_tokens == max_tokens


def test_local_stops_at_eos(tiny_model_dir: Path) -> None:
    backend = TransformersBackend(tiny_model_dir)
    # A zero final norm makes every logit 0; argmax then picks id 0, which is EOS.
    backend.model.model.norm.weight.data.zero_()
    c = backend.complete(USER, max_tokens=50)
    assert (c.text, c.finish_reason, c.completion_tokens) == ("", "stop", 1)


def test_local_chat_template_gets_tools_and_tool_history(local: TransformersBackend) -> None:
    prompt = local.render_prompt(HISTORY, tools=[GET_ORDER, CANCEL])
    assert "<tools>\n" + json.dumps({"type": "function", "function": GET_ORDER}) in prompt
    assert json.dumps(CANCEL) in prompt
    assert '<tool_call>{"name": "get_order", "arguments": {"order_id": "#W0001"}}</tool_call>' in prompt
    assert '<|im_start|>tool\n{"status": "pending"}<|im_end|>' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_local_decodes_and_parses_generated_tool_calls(
    local: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = 'Let me check. <tool_call>{"name": "get_order", "arguments": {"order_id": "#W0001"}}</tool_call>'
    ids = [*local.tokenizer.encode(text, add_special_tokens=False), local.tokenizer.eos_token_id]
    monkeypatch.setattr(local, "_generate", lambda *_: (ids, True))
    c = local.complete(HISTORY, tools=[GET_ORDER])
    assert c.text == "Let me check."
    assert c.tool_calls == (ToolCallRequest("call_0", "get_order", '{"order_id": "#W0001"}'),)
    assert (c.finish_reason, c.completion_tokens) == ("tool_calls", len(ids))

    bad = [*local.tokenizer.encode('<tool_call>{"name": oops}</tool_call>', add_special_tokens=False)]
    monkeypatch.setattr(local, "_generate", lambda *_: (bad, False))
    c = local.complete(HISTORY, tools=[GET_ORDER])
    assert c.text == '<tool_call>{"name": oops}</tool_call>'
    assert (c.tool_calls, c.finish_reason) == ((), "malformed_tool_call")


def test_local_is_thread_safe_and_batches_concurrent_calls(local: TransformersBackend) -> None:
    prompts = [USER, [ChatMessage("user", "where is my parcel? it is late")], HISTORY]
    expected = [local.complete(p, max_tokens=8) for p in prompts]  # one at a time
    sampled = local.complete(USER, temperature=1.0, max_tokens=8, seed=5)
    calls_before, batches_before = local.usage.calls, _batches()
    results: list[Any] = [None] * 8

    def worker(i: int) -> None:
        if i == 7:
            results[i] = local.complete(USER, temperature=1.0, max_tokens=8, seed=5)
        else:
            results[i] = local.complete(prompts[i % 3], max_tokens=8)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # Prompts of different lengths decoded side by side give what each gives alone (greedy and seeded).
    assert results == [expected[i % 3] for i in range(7)] + [sampled]
    assert local.usage.calls == calls_before + 8
    assert _batches() - batches_before < 8  # some calls shared a forward pass


def _batches() -> float:
    from eigenloop.inference.engine import BATCH_SIZE

    return sum(s.value for m in BATCH_SIZE.collect() for s in m.samples if s.name.endswith("_count"))


def test_local_prompt_past_the_context_is_a_backend_error(tmp_path: Path) -> None:
    backend = TransformersBackend(build_tiny_chat_model(tmp_path / "short", max_position_embeddings=32))
    try:
        with pytest.raises(BackendError, match="fills the model's context"):
            backend.complete([ChatMessage("user", "please cancel my order " * 20)], max_tokens=4)
        assert backend.complete([ChatMessage("user", "hi")], max_tokens=4).completion_tokens <= 4
    finally:
        backend.close()


def test_local_rejects_bad_arguments(local: TransformersBackend, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="max_tokens"):
        local.complete(USER, max_tokens=0)
    with pytest.raises(BackendError, match=str(tmp_path / "nope")):
        TransformersBackend(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------------------------


def test_factory_openai_needs_base_url() -> None:
    with pytest.raises(BackendError, match="base_url"):
        make_backend(BackendConfig(kind="openai", model="gpt-x"))


def test_factory_transformers_names_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(BackendError, match=f"{missing}.*does not exist"):
        make_backend(BackendConfig(kind="transformers", model=str(missing)))
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"")
    with pytest.raises(BackendError, match=f"{a_file}.*is not a directory"):
        make_backend(BackendConfig(kind="transformers", model=str(a_file)))


def test_factory_transformers_rejects_base_url(tiny_model_dir: Path) -> None:
    with pytest.raises(BackendError, match="base_url"):
        make_backend(BackendConfig(kind="transformers", model=str(tiny_model_dir), base_url="http://x/v1"))


def test_factory_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        BackendConfig.model_validate({"kind": "openai", "model": "m", "base_url": "http://x/v1", "temprature": 1})
    with pytest.raises(ValidationError):
        BackendConfig.model_validate({"kind": "vllm", "model": "m"})
    with pytest.raises(ValidationError):
        BackendConfig(kind="openai", model="m", max_retries=-1)


def test_factory_builds_both_kinds(server: FakeOpenAIServer, tiny_model_dir: Path) -> None:
    remote = make_backend(
        BackendConfig(kind="openai", model="fake-model", base_url=server.base_url, max_retries=1, timeout_s=5)
    )
    assert isinstance(remote, OpenAIBackend)
    assert (remote.name, remote.max_retries, remote.timeout_s) == ("openai:fake-model", 1, 5)
    assert remote.complete([ChatMessage("user", "hi")]).text == "hello"

    local = make_backend(BackendConfig(kind="transformers", model=str(tiny_model_dir)))
    assert isinstance(local, TransformersBackend)
    assert local.complete(USER, max_tokens=2).completion_tokens == 2
