"""inference against a real server process on loopback, serving a tiny random Qwen2 built here.

Checked: model info; greedy = transformers' greedy generate, batched or not; seeded sampling; stop ids and
max_new_tokens; logprobs; dynamic batching (batch-size histogram); bad Generate inputs; GenerateMany (keys sent at
once from many threads answer as Generate does, a bad key ends alone); UpdateWeights (version
bump, outputs follow the new weights, bad sha256 / shapes / sizes / headers refused with the old version serving,
generations racing updates each match their reported version); the OpenAI HTTP endpoint through OpenAIBackend,
tool-call parsing (in-process, with a scripted engine) and its 400s.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.torch import save as save_safetensors  # noqa: E402

from eigenloop.contracts.v1 import common_pb2 as pb  # noqa: E402
from eigenloop.contracts.v1 import inference_pb2 as ipb  # noqa: E402
from eigenloop.contracts.v1 import inference_pb2_grpc  # noqa: E402
from eigenloop.inference.engine import Generation  # noqa: E402
from eigenloop.inference.openai_http import ChatFrontend, OpenAIHTTPServer, build_chat_response  # noqa: E402
from eigenloop.launcher import HOST, free_port  # noqa: E402
from eigenloop.llm.base import ChatMessage  # noqa: E402
from eigenloop.llm.local import TransformersBackend  # noqa: E402
from eigenloop.llm.openai_backend import OpenAIBackend  # noqa: E402
from eigenloop.rpc.mux import Multiplexer  # noqa: E402
from tests.llm_fixtures import build_tiny_chat_model  # noqa: E402
from tests.support import TEST_DEVICE, ServiceProcess  # noqa: E402

INFERENCE = "eigenloop_inference.server"
PROMPTS = [
    [5, 17, 30, 8, 99],
    [40],
    [7, 7, 7, 120, 3, 44, 61],
    [250, 12],
    [9, 18, 27, 36],
    [300, 301, 302],
    [11],
    [60] * 9,
]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-policy"))


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Any:
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
    return model.eval()


@pytest.fixture(scope="module")
def original_state(reference: Any) -> dict[str, Any]:
    return {k: v.detach().clone().contiguous() for k, v in reference.state_dict().items()}


@pytest.fixture(scope="module")
def service(model_dir: Path) -> Iterator[ServiceProcess]:
    args = ["--model", str(model_dir), "--http-port", str(free_port()), "--max-batch-size", "8"]
    args += ["--batch-window-ms", "40", "--log-json", "false", "--device", TEST_DEVICE]
    with ServiceProcess(INFERENCE, args) as svc:
        svc.http_port = int(args[3])  # type: ignore[attr-defined]
        yield svc


@pytest.fixture(scope="module")
def stub(service: ServiceProcess) -> Iterator[inference_pb2_grpc.InferenceStub]:
    with grpc.insecure_channel(service.address) as channel:
        yield inference_pb2_grpc.InferenceStub(channel)


def generate(stub: Any, prompt: list[int], **sampling: Any) -> ipb.GenerateResponse:
    """All chunks of one Generate, merged; the finish reason and version are the last chunk's."""
    merged = ipb.GenerateResponse()
    for chunk in stub.Generate(
        ipb.GenerateRequest(prompt_token_ids=prompt, sampling=pb.SamplingParams(**sampling)), timeout=30
    ):
        merged.token_ids.extend(chunk.token_ids)
        merged.logprobs.extend(chunk.logprobs)
        merged.finish_reason = chunk.finish_reason
        merged.policy_version = chunk.policy_version
    return merged


def hf_greedy(model: Any, prompt: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, pad_token_id=1)
    return [int(t) for t in out[0, len(prompt) :]]


def with_weights(model_dir: Path, state: dict[str, Any]) -> Any:
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()
    model.load_state_dict(state)
    return model


def perturbed(state: dict[str, Any], seed: int, scale: float = 0.5) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype)).contiguous() for k, v in state.items()}


def chunks(blob: bytes, version: int, *, sha: str | None = None, total: int | None = None) -> list[ipb.WeightChunk]:
    header = ipb.WeightUpdateHeader(
        version=version,
        format="safetensors",
        total_bytes=len(blob) if total is None else total,
        sha256=sha or hashlib.sha256(blob).hexdigest(),
    )
    step = 256 * 1024
    return [ipb.WeightChunk(header=header)] + [
        ipb.WeightChunk(data=blob[i : i + step]) for i in range(0, len(blob), step)
    ]


def current_version(stub: Any) -> int:
    return int(stub.GetModelInfo(ipb.GetModelInfoRequest(), timeout=10).policy_version.version)


def update(stub: Any, state: dict[str, Any]) -> int:
    version = current_version(stub) + 1
    response = stub.UpdateWeights(iter(chunks(save_safetensors(state), version)), timeout=60)
    assert response.policy_version.version == version
    return version


# -- Generate ---------------------------------------------------------------------------------------------------


def test_model_info(stub: Any, reference: Any) -> None:
    info = stub.GetModelInfo(ipb.GetModelInfoRequest(), timeout=10)
    assert info.backend == "transformers"
    assert info.vocab_size == reference.config.vocab_size
    assert info.max_model_len == 1024
    assert info.num_parameters == sum(p.numel() for p in reference.parameters())
    assert list(info.eos_token_ids) == [0]
    assert info.policy_version.version == 0


def test_greedy_is_deterministic_and_matches_transformers(stub: Any, reference: Any) -> None:
    for prompt in PROMPTS[:4]:
        first = generate(stub, prompt, max_new_tokens=12)
        again = generate(stub, prompt, max_new_tokens=12)
        assert list(first.token_ids) == list(again.token_ids) == hf_greedy(reference, prompt, 12)
        assert first.finish_reason == ipb.FINISH_REASON_LENGTH


def test_logprobs_are_the_untempered_log_softmax(stub: Any, reference: Any) -> None:
    prompt = PROMPTS[0]
    response = generate(stub, prompt, max_new_tokens=6)
    assert len(response.logprobs) == len(response.token_ids) == 6
    assert all(math.isfinite(lp) and lp <= 0 for lp in response.logprobs)
    with torch.no_grad():
        logits = reference(torch.tensor([prompt + list(response.token_ids)])).logits[0].float()
    expected = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    for i, (token, lp) in enumerate(zip(response.token_ids, response.logprobs, strict=True)):
        assert lp == pytest.approx(float(expected[i, token]), abs=1e-4)
    hot = generate(stub, prompt, max_new_tokens=6, temperature=1.7, top_k=5, seed=1)
    assert all(math.isfinite(lp) and lp <= 0 for lp in hot.logprobs) and len(hot.logprobs) == 6


def test_seeded_sampling_is_reproducible(stub: Any) -> None:
    params = {"max_new_tokens": 24, "temperature": 1.0, "top_p": 0.95, "top_k": 100}
    a = generate(stub, PROMPTS[0], seed=7, **params)
    b = generate(stub, PROMPTS[0], seed=7, **params)
    c = generate(stub, PROMPTS[0], seed=8, **params)
    assert list(a.token_ids) == list(b.token_ids) and list(a.logprobs) == list(b.logprobs)
    assert list(a.token_ids) != list(c.token_ids)


def test_max_new_tokens_and_stop_ids(stub: Any) -> None:
    prompt = PROMPTS[2]
    full = list(generate(stub, prompt, max_new_tokens=10).token_ids)
    short = generate(stub, prompt, max_new_tokens=3)
    assert list(short.token_ids) == full[:3] and short.finish_reason == ipb.FINISH_REASON_LENGTH
    stop = full[5]
    cut = full.index(stop)
    stopped = generate(stub, prompt, max_new_tokens=10, stop_token_ids=[stop, 0])
    assert list(stopped.token_ids) == full[: cut + 1]
    assert stopped.finish_reason == ipb.FINISH_REASON_STOP


def test_concurrent_requests_are_batched_and_equal_unbatched(stub: Any, service: ServiceProcess) -> None:
    single = [list(generate(stub, p, max_new_tokens=16).token_ids) for p in PROMPTS]
    batches_before = service.metric("eigenloop_inference_batch_size_count")
    requests_before = service.metric("eigenloop_inference_batch_size_sum")
    singles_before = service.metric("eigenloop_inference_batch_size_bucket", le="1.0")
    results: list[list[int] | None] = [None] * len(PROMPTS)
    barrier = threading.Barrier(len(PROMPTS))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = list(generate(stub, PROMPTS[i], max_new_tokens=16).token_ids)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == single
    batches = service.metric("eigenloop_inference_batch_size_count") - batches_before
    assert service.metric("eigenloop_inference_batch_size_sum") - requests_before == len(PROMPTS)
    # Some batch held more than one request: fewer batches than requests, and not all of size 1.
    assert batches < len(PROMPTS)
    assert service.metric("eigenloop_inference_batch_size_bucket", le="1.0") - singles_before < batches
    assert service.metric("eigenloop_inference_tokens_generated_total") > 0


@pytest.mark.parametrize(
    ("prompt", "sampling", "fragment"),
    [
        ([], {}, "empty"),
        ([5, 10**6], {}, "outside the vocabulary"),
        ([5, -1], {}, "outside the vocabulary"),
        ([5], {"max_new_tokens": 5000}, "exceeds the context"),
        ([5] * 1024, {}, "no room"),
        ([5], {"temperature": -1.0}, "temperature"),
        ([5], {"top_p": 1.5}, "top_p"),
        ([5], {"stop_token_ids": [10**6]}, "stop_token_ids"),
    ],
)
def test_bad_generate_requests(stub: Any, prompt: list[int], sampling: dict[str, Any], fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        generate(stub, prompt, **sampling)
    assert err.value.code() == INVALID
    assert fragment in (err.value.details() or "")


def test_generate_many_answers_each_key_as_generate_does(stub: Any) -> None:
    """Keys of one GenerateMany stream, sent at once from many threads (greedy and seeded-sampled, one of them a bad
    request): each answer is what Generate gives; the bad key alone ends with INVALID_ARGUMENT."""
    cases = [(p, {"max_new_tokens": 12}) for p in PROMPTS]
    cases += [(p, {"max_new_tokens": 12, "temperature": 1.0, "seed": 3}) for p in PROMPTS[:4]]
    expected = [generate(stub, prompt, **sampling) for prompt, sampling in cases]
    mux = Multiplexer(stub.GenerateMany, ipb.GenerateFrame, service="inference")
    got: list[Any] = [None] * (len(cases) + 1)
    barrier = threading.Barrier(len(got))

    def run(i: int) -> None:
        prompt, sampling = cases[i] if i < len(cases) else ([5, 10**6], {})
        request = ipb.GenerateRequest(prompt_token_ids=prompt, sampling=pb.SamplingParams(**sampling))
        key = mux.open(timeout_s=30)
        barrier.wait()
        try:
            got[i] = key.call(request)
        except grpc.RpcError as exc:
            got[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(got))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    mux.close()
    for want, have in zip(expected, got, strict=False):
        assert list(have.token_ids) == list(want.token_ids)
        assert list(have.logprobs) == pytest.approx(list(want.logprobs), abs=1e-4)
        assert (have.finish_reason, have.policy_version) == (want.finish_reason, want.policy_version)
    bad = got[-1]
    assert isinstance(bad, grpc.RpcError) and bad.code() == INVALID
    assert "outside the vocabulary" in bad.details()


# -- UpdateWeights ----------------------------------------------------------------------------------------------


def test_update_weights_changes_the_policy(
    stub: Any, service: ServiceProcess, model_dir: Path, original_state: dict[str, Any]
) -> None:
    prompt = PROMPTS[0]
    before = list(generate(stub, prompt, max_new_tokens=12).token_ids)
    new_state = perturbed(original_state, seed=1)
    version = update(stub, new_state)
    response = generate(stub, prompt, max_new_tokens=12)
    assert response.policy_version == version
    assert list(response.token_ids) != before
    assert list(response.token_ids) == hf_greedy(with_weights(model_dir, new_state), prompt, 12)
    assert service.metric("eigenloop_inference_policy_version") == version
    info = stub.GetModelInfo(ipb.GetModelInfoRequest(), timeout=10)
    assert info.policy_version.checkpoint.startswith("sha256:")

    restored = update(stub, original_state)
    back = generate(stub, prompt, max_new_tokens=12)
    assert back.policy_version == restored and list(back.token_ids) == before


def _refused(stub: Any, messages: list[ipb.WeightChunk]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdateWeights(iter(messages), timeout=60)
    return err.value


def test_bad_updates_are_refused_and_the_old_version_serves(stub: Any, original_state: dict[str, Any]) -> None:
    prompt = PROMPTS[1]
    version = current_version(stub)
    before = list(generate(stub, prompt, max_new_tokens=8).token_ids)
    blob = save_safetensors(perturbed(original_state, seed=2))
    good = chunks(blob, version + 1)

    err = _refused(stub, chunks(blob, version + 1, sha="0" * 64))
    assert err.code() == INVALID and "sha256" in (err.details() or "")
    assert _refused(stub, chunks(blob, version + 1, total=len(blob) + 1)).code() == INVALID
    assert _refused(stub, chunks(blob, version + 1, total=len(blob) - 1)).code() == INVALID
    assert _refused(stub, good[1:]).code() == INVALID  # no header
    assert _refused(stub, [good[0], *good]).code() == INVALID  # duplicated header
    assert _refused(stub, [good[0]]).code() == INVALID  # header, no data
    assert _refused(stub, [ipb.WeightChunk()]).code() == INVALID

    wrong_shape = dict(original_state)
    name = "model.embed_tokens.weight"
    wrong_shape[name] = torch.zeros(wrong_shape[name].shape[0] + 1, wrong_shape[name].shape[1])
    err = _refused(stub, chunks(save_safetensors(wrong_shape), version + 1))
    assert err.code() == INVALID and name in (err.details() or "")
    missing = {k: v for k, v in original_state.items() if k != "lm_head.weight"}
    assert _refused(stub, chunks(save_safetensors(missing), version + 1)).code() == INVALID
    extra = {**original_state, "stowaway": torch.zeros(2)}
    assert _refused(stub, chunks(save_safetensors(extra), version + 1)).code() == INVALID
    wrong_dtype = {k: v.to(torch.float16) for k, v in original_state.items()}
    assert _refused(stub, chunks(save_safetensors(wrong_dtype), version + 1)).code() == INVALID
    not_safetensors = b"x" * 100
    assert _refused(stub, chunks(not_safetensors, version + 1)).code() == INVALID
    stale = _refused(stub, chunks(blob, version))
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION

    assert current_version(stub) == version
    still = generate(stub, prompt, max_new_tokens=8)
    assert still.policy_version == version and list(still.token_ids) == before


def test_generations_racing_updates_match_their_version(
    stub: Any, model_dir: Path, original_state: dict[str, Any]
) -> None:
    prompt, n = PROMPTS[4], 10
    states = {current_version(stub): original_state}
    expected = {v: hf_greedy(with_weights(model_dir, s), prompt, n) for v, s in states.items()}
    plan = [perturbed(original_state, seed=10 + i) for i in range(3)] + [original_state]
    seen: list[ipb.GenerateResponse] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            seen.append(generate(stub, prompt, max_new_tokens=n))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for state in plan:
            time.sleep(0.05)
            version = update(stub, state)
            states[version] = state
        time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    for version, state in states.items():
        if version not in expected:
            expected[version] = hf_greedy(with_weights(model_dir, state), prompt, n)
    versions = {r.policy_version for r in seen}
    assert len(versions) >= 2, versions
    for response in seen:
        assert list(response.token_ids) == expected[response.policy_version], response.policy_version


# -- OpenAI HTTP ------------------------------------------------------------------------------------------------


def _http(service: ServiceProcess, path: str, body: bytes | None = None) -> tuple[int, Any]:
    url = f"http://{HOST}:{service.http_port}{path}"  # type: ignore[attr-defined]
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_openai_chat_through_openai_backend(service: ServiceProcess, model_dir: Path) -> None:
    status, models = _http(service, "/v1/models")
    assert status == 200 and models["data"][0]["id"] == model_dir.name
    messages = [ChatMessage("system", "be brief"), ChatMessage("user", "please check my order status")]
    tools = [{"name": "get_order", "description": "an order", "parameters": {"type": "object", "properties": {}}}]
    local = TransformersBackend(model_dir)
    base_url = f"http://{HOST}:{service.http_port}/v1"  # type: ignore[attr-defined]
    with OpenAIBackend(base_url, model_dir.name, max_retries=0) as backend:
        for kwargs in ({}, {"tools": tools}):
            got = backend.complete(messages, temperature=0.0, max_tokens=10, **kwargs)  # type: ignore[arg-type]
            want = local.complete(messages, temperature=0.0, max_tokens=10, **kwargs)  # type: ignore[arg-type]
            assert got.text == want.text and got.finish_reason == want.finish_reason
            assert got.completion_tokens == 10 and got.prompt_tokens == want.prompt_tokens > 0
        seeded = [backend.complete(messages, temperature=1.0, max_tokens=10, seed=3).text for _ in range(2)]
        assert seeded[0] == seeded[1]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (b"{}", 400, "messages"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode(), 400, "stream"),
        (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), 400, "role"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}).encode(), 400, "temp"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}).encode(), 400, "max_tokens"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 99999}).encode(), 400, "context"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}], "model": "other"}).encode(), 404, "other"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}], "tools": [{}]}).encode(), 400, "tool"),
    ],
)
def test_openai_bad_requests(service: ServiceProcess, body: bytes, status: int, fragment: str) -> None:
    got, payload = _http(service, "/v1/chat/completions", body)
    assert got == status
    assert fragment in payload["error"]["message"] and payload["error"]["type"]


def test_openai_unknown_route(service: ServiceProcess) -> None:
    assert _http(service, "/v1/completions", b"{}")[0] == 404
    assert _http(service, "/v2/models")[0] == 404


# -- tool-call parsing (model-independent: a scripted engine behind the real frontend and HTTP server) ------------


class ScriptedEngine:
    """Stands in for TransformersEngine: returns the token ids of a given text."""

    def __init__(self, model_dir: Path) -> None:
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.path = str(model_dir)
        self.model_id = "scripted"
        self.eos_token_ids = [0]
        self.text = ""

    def generate(self, prompt_ids: list[int], params: pb.SamplingParams) -> Generation:
        ids = self.tokenizer(self.text, add_special_tokens=False)["input_ids"] + [0]
        return Generation(ids, [-1.0] * len(ids), "stop", 4)


def test_tool_calls_parsed_through_http(model_dir: Path) -> None:
    engine = ScriptedEngine(model_dir)
    server = OpenAIHTTPServer(ChatFrontend(engine), HOST, 0).start()  # type: ignore[arg-type]
    try:
        with OpenAIBackend(server.base_url, "scripted", max_retries=0) as backend:
            engine.text = 'let me look<tool_call>{"name": "get_order", "arguments": {"order_id": "#W0001"}}</tool_call>'
            got = backend.complete([ChatMessage("user", "where is my order")])
            assert got.finish_reason == "tool_calls" and got.text == "let me look"
            assert [(c.id, c.name, json.loads(c.arguments_json)) for c in got.tool_calls] == [
                ("call_0", "get_order", {"order_id": "#W0001"})
            ]
            engine.text = "<tool_call>{oops</tool_call>"
            bad = backend.complete([ChatMessage("user", "where is my order")])
            assert bad.finish_reason == "malformed_tool_call" and bad.text == "<tool_call>{oops</tool_call>"
            assert not bad.tool_calls
            engine.text = "plain answer"
            assert backend.complete([ChatMessage("user", "hi")]).finish_reason == "stop"
    finally:
        server.close()


def test_response_builder() -> None:
    generation = Generation([1, 2, 3], [-0.1, -0.2, -0.3], "length", 7)
    body = build_chat_response(
        '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>', generation, prompt_tokens=5, model="m"
    )
    choice = body["choices"][0]
    assert choice["finish_reason"] == "malformed_tool_call" and "eigenloop_error" in choice
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "a"
    assert choice["message"]["content"] == "<tool_call>"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert body["eigenloop"]["policy_version"] == 7
    plain = build_chat_response("hello", generation, prompt_tokens=5, model="m")["choices"][0]
    assert plain["finish_reason"] == "length" and plain["message"]["content"] == "hello"
