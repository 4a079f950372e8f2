"""VLLMEngine's own logic against a fake `vllm` module (vLLM needs a GPU; what vLLM itself does is not tested here).

The fake stands in for the parts of vLLM's API the engine uses: `vllm.LLM(model, **engine args)` with `llm_engine`
(`add_request` / `step` / `abort_request`, `model_config`), `get_tokenizer`, `collective_rpc` (calling the real worker
extension on fake workers) and `reset_prefix_cache`; `SamplingParams`, `RequestOutputKind`, `TokensPrompt`. Its
"model" emits one token per step per running request, a function of the prompt, the step, the request's seed and the
loaded weights, with a logprob per token that differs from the other entries of the step's logprob dict.

Checked: the SamplingParams mapping (top_p/top_k "off" values, EOS and stop ids, per-request seed, logprobs of the
sampled token only, final-only outputs, max_new_tokens 0 = the rest of the context), logprob extraction, finish
reasons, the version each request reports, concurrent submits batched together, update_weights (checked against the
checkpoint's headers, loaded on every worker, prefix cache reset, drained first: no request runs across a swap, new
ones wait), failures (a failed step, a failed load closes the engine, close, which also shuts vLLM's engine process
down), vllm missing, the start method of vLLM's engine process, and the server's backend choice.
"""

from __future__ import annotations

import enum
import importlib
import importlib.machinery
import json
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save, save_file  # noqa: E402

from eigenloop.contracts.v1 import common_pb2 as pb  # noqa: E402
from eigenloop.contracts.v1 import inference_pb2 as ipb  # noqa: E402
from eigenloop.inference.base import (  # noqa: E402
    EngineClosedError,
    InvalidRequestError,
    StaleVersionError,
    WeightMismatchError,
)
from eigenloop.inference.vllm_engine import VLLMEngine, VLLMUnavailableError  # noqa: E402
from eigenloop.inference.vllm_worker import LOAD_WEIGHTS, WeightUpdateExtension  # noqa: E402
from eigenloop.llm.base import BackendError  # noqa: E402
from eigenloop_inference.server import InferenceConfig, main, registrations  # noqa: E402

VOCAB, CONTEXT, TOKENIZER_EOS, CONFIG_EOS = 32, 64, 2, 3
PROMPT = [5, 9, 14]


# -- the fake vllm --------------------------------------------------------------------------------------------


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


class SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def tokens_prompt(**kwargs: Any) -> dict[str, Any]:  # a TypedDict in vLLM: calling it builds a dict
    return dict(kwargs)


class Logprob:
    def __init__(self, logprob: float) -> None:
        self.logprob = logprob


def logprob_of(token: int) -> float:
    return -(token + 1) / 100


class FakeModel:
    """What `model_runner.get_model()` returns in a worker: records what `load_weights` received."""

    def __init__(self, weights: dict[str, Any]) -> None:
        self.weights = weights

    def load_weights(self, weights: Any) -> set[str]:
        loaded = {name: tensor.clone() for name, tensor in weights}
        self.weights.update(loaded)
        return set(loaded)


class FakeWorker(WeightUpdateExtension):
    def __init__(self, model: FakeModel) -> None:
        self.model_runner = types.SimpleNamespace(get_model=lambda: model)


class FakeLLMEngine:
    def __init__(self, llm: FakeLLM, max_model_len: int | None) -> None:
        self.llm = llm
        self.model_config = types.SimpleNamespace(max_model_len=max_model_len or CONTEXT, get_vocab_size=lambda: VOCAB)
        self.running: dict[str, dict[str, Any]] = {}
        self.hold = threading.Event()  # cleared: step() waits, as a long decode step would
        self.hold.set()
        self.fail_next_step: Exception | None = None
        self.finish_override: str | None = None
        self.max_running = 0
        self.engine_core = types.SimpleNamespace(shutdowns=0)
        self.engine_core.shutdown = lambda: setattr(self.engine_core, "shutdowns", self.engine_core.shutdowns + 1)

    def add_request(self, request_id: str, prompt: dict[str, Any], params: SamplingParams) -> None:
        assert set(prompt) == {"prompt_token_ids"}
        self.running[request_id] = {"prompt": list(prompt["prompt_token_ids"]), "params": params.kwargs, "out": []}
        self.max_running = max(self.max_running, len(self.running))
        self.llm.timeline.append(("add", request_id))

    def step(self) -> list[Any]:
        assert self.running, "step() with nothing running blocks forever in vLLM's multiprocess engine"
        assert self.hold.wait(10)
        if self.fail_next_step is not None:
            err, self.fail_next_step = self.fail_next_step, None
            raise err
        finished = []
        for request_id, state in list(self.running.items()):
            params, out = state["params"], state["out"]
            # never an EOS id (2, 3): completions end at max_tokens unless a test asks for a stop id
            mixed = sum(state["prompt"]) * 7 + len(out) * 13 + (params["seed"] or 0) + self.llm.marker()
            token = 4 + mixed % (VOCAB - 4)
            out.append(token)
            if token in params["stop_token_ids"] or len(out) == params["max_tokens"]:
                reason = "stop" if token in params["stop_token_ids"] else "length"
                completion = types.SimpleNamespace(
                    token_ids=tuple(out),
                    logprobs=[{t: Logprob(logprob_of(t)), (t + 1) % VOCAB: Logprob(-9.0)} for t in out],
                    finish_reason=self.finish_override or reason,
                )
                finished.append(types.SimpleNamespace(request_id=request_id, finished=True, outputs=[completion]))
                del self.running[request_id]
                self.llm.timeline.append(("finish", request_id))
        return finished

    def abort_request(self, request_ids: list[str]) -> None:
        self.llm.aborted += request_ids
        for request_id in request_ids:
            self.running.pop(request_id, None)


class FakeLLM:
    made: list[FakeLLM] = []

    def __init__(self, model: str, **kwargs: Any) -> None:
        self.model, self.kwargs = model, kwargs
        self.start_method = os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")  # how vLLM would start its engine process
        self.llm_engine = FakeLLMEngine(self, kwargs.get("max_model_len"))
        self.weights = load_file(str(Path(model) / "model.safetensors"))
        self.workers = [FakeWorker(FakeModel(self.weights)) for _ in range(kwargs["tensor_parallel_size"])]
        self.timeline: list[tuple[str, ...]] = []
        self.aborted: list[str] = []
        self.fail_load = False
        FakeLLM.made.append(self)

    def marker(self) -> int:
        """The loaded weights' mark on every token: other weights, other tokens."""
        return int(abs(float(self.weights["embed.weight"].sum())) * 1000) % VOCAB

    def get_tokenizer(self) -> Any:
        return types.SimpleNamespace(eos_token_id=TOKENIZER_EOS)

    def collective_rpc(
        self, method: str, timeout: float | None = None, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> list[Any]:
        self.timeline.append(("load", str(len(self.llm_engine.running))))
        if self.fail_load:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return [getattr(worker, method)(*args, **(kwargs or {})) for worker in self.workers]

    def reset_prefix_cache(self) -> bool:
        self.timeline.append(("reset",))
        return True


@pytest.fixture()
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeLLM]]:
    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", None)  # find_spec() reads it
    vllm.LLM = FakeLLM  # type: ignore[attr-defined]
    vllm.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    sampling_params = types.ModuleType("vllm.sampling_params")
    sampling_params.RequestOutputKind = RequestOutputKind  # type: ignore[attr-defined]
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = tokens_prompt  # type: ignore[attr-defined]
    for name, module in (("vllm", vllm), ("vllm.sampling_params", sampling_params), ("vllm.inputs", inputs)):
        monkeypatch.setitem(sys.modules, name, module)
    # The engine sets this in the process environment; monkeypatch puts back what was there before.
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "")
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD")
    FakeLLM.made.clear()
    yield FakeLLM


def checkpoint() -> dict[str, Any]:
    torch.manual_seed(0)
    return {
        "embed.weight": torch.randn(VOCAB, 8),
        "layer.weight": torch.randn(8, 8),
        "layer.steps": torch.zeros(1, dtype=torch.int64),
    }


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    out = tmp_path / "policy"
    out.mkdir()
    save_file(checkpoint(), str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"eos_token_id": CONFIG_EOS, "max_position_embeddings": CONTEXT}))
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": [CONFIG_EOS]}))
    return out


@pytest.fixture()
def engine(fake_vllm: type[FakeLLM], model_dir: Path, tmp_path: Path) -> Iterator[VLLMEngine]:
    (tmp_path / "staging").mkdir()
    built = VLLMEngine(model_dir, tensor_parallel_size=2, weights_dir=tmp_path / "staging")
    yield built
    FakeLLM.made[-1].llm_engine.hold.set()
    built.close()


def fake(engine: VLLMEngine) -> FakeLLM:
    return FakeLLM.made[-1]


def params(**kwargs: Any) -> pb.SamplingParams:
    return pb.SamplingParams(**kwargs)


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def blob(**changes: Any) -> bytes:
    tensors = checkpoint()
    tensors.update(changes)
    return save({k: v for k, v in tensors.items() if v is not None})


# -- building ---------------------------------------------------------------------------------------------------


def test_engine_args_model_facts_and_worker_extension(engine: VLLMEngine, model_dir: Path) -> None:
    llm = fake(engine)
    assert llm.model == str(model_dir)
    assert llm.kwargs == {
        "dtype": "auto",
        "gpu_memory_utilization": 0.9,
        "tensor_parallel_size": 2,
        "max_model_len": None,
        "worker_extension_cls": "eigenloop.inference.vllm_worker.WeightUpdateExtension",
        "logprobs_mode": "raw_logprobs",
    }
    module, _, name = llm.kwargs["worker_extension_cls"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is WeightUpdateExtension
    assert callable(getattr(WeightUpdateExtension, LOAD_WEIGHTS))
    info = engine.info()
    assert (info.backend, info.vocab_size, info.max_model_len, info.version) == ("vllm", VOCAB, CONTEXT, 0)
    assert info.eos_token_ids == [TOKENIZER_EOS, CONFIG_EOS]
    assert info.num_parameters == VOCAB * 8 + 8 * 8 + 1
    assert info.checkpoint == str(model_dir)


def test_engine_args_are_passed_on_but_not_over_ours(fake_vllm: type[FakeLLM], model_dir: Path) -> None:
    built = VLLMEngine(model_dir, max_model_len=48, dtype="bfloat16", engine_args={"max_num_seqs": 16})
    try:
        assert FakeLLM.made[-1].kwargs["max_num_seqs"] == 16
        assert FakeLLM.made[-1].kwargs["max_model_len"] == 48
        assert built.info().max_model_len == 48
    finally:
        built.close()
    with pytest.raises(ValueError, match=r"may not set logprobs_mode .*untempered.*; model"):
        VLLMEngine(model_dir, engine_args={"model": "other", "logprobs_mode": "processed_logprobs"})


@pytest.mark.parametrize(("set_before", "start_method"), [(None, "spawn"), ("fork", "fork")])
def test_vllm_spawns_its_engine_process_unless_told_otherwise(
    fake_vllm: type[FakeLLM],
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    set_before: str | None,
    start_method: str,
) -> None:
    # Forked, the engine process cannot use CUDA once the parent asked torch about it (found on an H100, vLLM 0.24).
    if set_before is not None:
        monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", set_before)
    VLLMEngine(model_dir).close()
    assert FakeLLM.made[-1].start_method == start_method


def test_vllm_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(VLLMUnavailableError, match=r"pip install 'eigenloop\[vllm\]'") as caught:
        VLLMEngine(model_dir)
    assert isinstance(caught.value, ImportError)


def test_a_model_dir_without_safetensors_or_a_missing_weights_dir_is_refused(
    fake_vllm: type[FakeLLM], model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(BackendError, match=r"no \*\.safetensors checkpoint"):
        VLLMEngine(tmp_path)
    with pytest.raises(BackendError, match="is not a directory"):
        VLLMEngine(model_dir, weights_dir=tmp_path / "nowhere")
    assert FakeLLM.made == []  # refused before vLLM loads anything


# -- generation -------------------------------------------------------------------------------------------------


def test_sampling_params_mapping(engine: VLLMEngine) -> None:
    mapped = engine.sampling_params(params(temperature=0.7, top_p=0, top_k=0, stop_token_ids=[9, 3], seed=11), 5)
    assert mapped.kwargs == {
        "n": 1,
        "temperature": pytest.approx(0.7),
        "top_p": 1.0,
        "top_k": -1,
        "max_tokens": 5,
        "stop_token_ids": [TOKENIZER_EOS, CONFIG_EOS, 9],
        "seed": 11,
        "logprobs": 0,
        "detokenize": False,
        "output_kind": RequestOutputKind.FINAL_ONLY,
    }
    plain = engine.sampling_params(params(top_p=0.9, top_k=40), 3).kwargs
    assert (plain["top_p"], plain["top_k"], plain["seed"], plain["temperature"]) == (pytest.approx(0.9), 40, None, 0)


def test_generate_returns_the_sampled_tokens_logprobs_and_version(engine: VLLMEngine) -> None:
    got = engine.generate(PROMPT, params(max_new_tokens=4), timeout_s=5)
    assert len(got.token_ids) == 4 and got.finish_reason == "length" and got.policy_version == 0
    assert got.logprobs == [logprob_of(t) for t in got.token_ids]  # the sampled token's entry, not the other one
    # max_new_tokens 0: the rest of the context
    long = engine.generate(PROMPT, params(), timeout_s=5)
    assert len(long.token_ids) == CONTEXT - len(PROMPT)
    # a stop id ends the completion and is included
    stopped = engine.generate(PROMPT, params(max_new_tokens=4, stop_token_ids=[got.token_ids[1]]), timeout_s=5)
    assert stopped.token_ids == got.token_ids[:2] and stopped.finish_reason == "stop"
    # a per-request seed reaches vLLM
    assert engine.generate(PROMPT, params(max_new_tokens=4, seed=1), timeout_s=5).token_ids != got.token_ids


@pytest.mark.parametrize(("vllm_reason", "ours"), [("abort", "abort"), ("error", "abort")])
def test_other_finish_reasons_are_aborts(engine: VLLMEngine, vllm_reason: str, ours: str) -> None:
    fake(engine).llm_engine.finish_override = vllm_reason
    assert engine.generate(PROMPT, params(max_new_tokens=2), timeout_s=5).finish_reason == ours


@pytest.mark.parametrize(
    ("prompt", "sampling", "message"),
    [
        ([], params(), "prompt_token_ids is empty"),
        ([VOCAB], params(), "outside the vocabulary"),
        ([1] * CONTEXT, params(), "leaves no room"),
        (PROMPT, params(max_new_tokens=CONTEXT), "exceeds the context"),
        (PROMPT, params(top_p=1.5), "top_p must be in"),
        (PROMPT, params(stop_token_ids=[VOCAB + 3]), "stop_token_ids outside"),
    ],
)
def test_bad_requests_are_refused_before_vllm(
    engine: VLLMEngine, prompt: list[int], sampling: pb.SamplingParams, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        engine.submit(prompt, sampling)
    assert fake(engine).timeline == []


def test_concurrent_submits_join_one_running_batch(engine: VLLMEngine) -> None:
    llm = fake(engine)
    llm.llm_engine.hold.clear()
    prompts = [[i, i + 1] for i in range(1, 17)]
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(engine.generate, p, params(max_new_tokens=6), 10) for p in prompts]
        wait_for(lambda: len(llm.llm_engine.running) >= 1)
        time.sleep(0.05)  # the others queue while the first step runs
        llm.llm_engine.hold.set()
        results = [f.result(timeout=10) for f in futures]
    assert all(len(r.token_ids) == 6 and r.policy_version == 0 for r in results)
    assert llm.llm_engine.max_running > 1
    assert len({tuple(r.token_ids) for r in results}) > 1


def test_a_failed_step_fails_its_requests_not_the_engine(engine: VLLMEngine) -> None:
    fake(engine).llm_engine.fail_next_step = RuntimeError("boom")
    future = engine.submit(PROMPT, params(max_new_tokens=3))
    with pytest.raises(RuntimeError, match="boom"):
        future.result(timeout=5)
    assert fake(engine).aborted != []
    assert len(engine.generate(PROMPT, params(max_new_tokens=3), timeout_s=5).token_ids) == 3


def test_close_fails_waiting_and_running_requests(engine: VLLMEngine) -> None:
    llm = fake(engine)
    llm.llm_engine.hold.clear()
    running = engine.submit(PROMPT, params(max_new_tokens=8))
    wait_for(lambda: len(llm.llm_engine.running) == 1)
    waiting = engine.submit([7, 8], params(max_new_tokens=8))
    closer = threading.Thread(target=engine.close)
    closer.start()
    with pytest.raises(EngineClosedError):
        waiting.result(timeout=5)
    llm.llm_engine.hold.set()
    closer.join(timeout=10)
    with pytest.raises(EngineClosedError):
        running.result(timeout=5)
    assert llm.aborted == [next(iter(e[1] for e in llm.timeline if e[0] == "add"))]
    with pytest.raises(EngineClosedError):
        engine.submit(PROMPT, params())
    assert llm.llm_engine.engine_core.shutdowns == 1  # vLLM's engine process gives its GPU memory back
    engine.close()
    assert llm.llm_engine.engine_core.shutdowns == 1  # once


def test_a_failing_vllm_shutdown_is_logged_and_close_returns(
    engine: VLLMEngine, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse() -> None:
        raise RuntimeError("engine process already gone")

    fake(engine).llm_engine.engine_core.shutdown = refuse
    engine.close()
    assert "vllm engine shutdown failed" in caplog.text
    with pytest.raises(EngineClosedError):
        engine.submit(PROMPT, params())


# -- weight updates ---------------------------------------------------------------------------------------------


def test_update_loads_on_every_worker_resets_the_prefix_cache_and_bumps_the_version(
    engine: VLLMEngine, tmp_path: Path
) -> None:
    llm = fake(engine)
    before = engine.generate(PROMPT, params(max_new_tokens=4), timeout_s=5)
    new = checkpoint()["embed.weight"] * 2
    assert engine.update_weights(blob(**{"embed.weight": new}), 1, checkpoint="sha256:ab") == 1
    for worker in llm.workers:
        assert torch.equal(worker.model_runner.get_model().weights["embed.weight"], new)
    assert llm.timeline[-2:] == [("load", "0"), ("reset",)]
    assert list((tmp_path / "staging").iterdir()) == []  # the staged file is gone
    info = engine.info()
    assert (info.version, info.checkpoint) == (1, "sha256:ab")
    after = engine.generate(PROMPT, params(max_new_tokens=4), timeout_s=5)
    assert after.policy_version == 1 and after.token_ids != before.token_ids
    # the same weights again: the same tokens as before
    engine.update_weights(blob(), 2)
    assert engine.generate(PROMPT, params(max_new_tokens=4), timeout_s=5).token_ids == before.token_ids
    with pytest.raises(StaleVersionError):
        engine.update_weights(blob(), 2)


def test_an_update_drains_running_requests_and_holds_new_ones(engine: VLLMEngine) -> None:
    llm = fake(engine)
    old = engine.generate([7, 8], params(max_new_tokens=3), timeout_s=5).token_ids
    llm.timeline.clear()
    llm.llm_engine.hold.clear()
    first = engine.submit(PROMPT, params(max_new_tokens=3))
    wait_for(lambda: len(llm.llm_engine.running) == 1)
    updater = ThreadPoolExecutor(1)
    updated = updater.submit(engine.update_weights, blob(**{"embed.weight": checkpoint()["embed.weight"] * 3}), 1)
    wait_for(lambda: engine._swap is not None)  # the gate is down: nothing new is admitted
    second = engine.submit([7, 8], params(max_new_tokens=3))
    time.sleep(0.05)
    assert not updated.done() and not second.done()
    llm.llm_engine.hold.set()
    assert updated.result(timeout=5) == 1
    got_first, got_second = first.result(timeout=5), second.result(timeout=5)
    updater.shutdown()
    assert got_first.policy_version == 0 and got_second.policy_version == 1
    assert got_second.token_ids != old  # generated by the new weights
    events = [e[0] for e in llm.timeline]
    assert events == ["add", "finish", "load", "reset", "add", "finish"]
    assert ("load", "0") in llm.timeline  # nothing was in vLLM while the weights changed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not safetensors at all", "not a safetensors blob"),
        (blob(**{"extra.weight": torch.zeros(2)}), "tensor\\(s\\) the model does not have: \\['extra.weight'\\]"),
        (blob(**{"layer.weight": None}), "missing: \\['layer.weight'\\]"),
        (blob(**{"layer.weight": torch.zeros(8, 9)}), "layer.weight: got shape \\(8, 9\\), the model has \\(8, 8\\)"),
        (blob(**{"layer.weight": torch.zeros(8, 8, dtype=torch.int32)}), "got dtype I32, the model has F32"),
        (blob(**{"layer.steps": torch.zeros(1, dtype=torch.int32)}), "got dtype I32, the model has I64"),
        (blob(**{"layer.weight": torch.full((8, 8), float("nan"))}), "NaN or infinite"),
    ],
)
def test_weights_that_do_not_fit_are_refused_and_the_old_ones_serve(
    engine: VLLMEngine, data: bytes, message: str
) -> None:
    with pytest.raises(WeightMismatchError, match=message):
        engine.update_weights(data, 1)
    assert engine.info().version == 0
    assert all(e[0] != "load" for e in fake(engine).timeline)


def test_another_float_dtype_is_accepted(engine: VLLMEngine) -> None:
    halves = {k: (v.half() if v.is_floating_point() else v) for k, v in checkpoint().items()}
    assert engine.update_weights(save(halves), 1) == 1


def test_a_failed_load_closes_the_engine(engine: VLLMEngine) -> None:
    fake(engine).fail_load = True
    with pytest.raises(EngineClosedError, match=r"illegal memory access.*restart the server"):
        engine.update_weights(blob(), 1)
    assert engine.info().version == 0
    with pytest.raises(EngineClosedError, match="restart the server"):
        engine.submit(PROMPT, params())


def test_the_worker_extension_streams_the_file_into_load_weights(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file(checkpoint(), str(path))
    model = FakeModel({})
    assert FakeWorker(model).eigenloop_load_weights(str(path)) == 3
    assert all(torch.equal(model.weights[k], v) for k, v in checkpoint().items())


# -- the server's backend choice --------------------------------------------------------------------------------


def test_unknown_backend_is_a_clear_config_error(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValidationError, match="backend\n  Input should be 'transformers' or 'vllm'"):
        InferenceConfig(model=model_dir, backend="tensorrt")  # type: ignore[arg-type]
    monkeypatch.setenv("EIGENLOOP_INFERENCE_BACKEND", "onnx")
    assert main(["--model", str(model_dir)]) == 2
    assert "Input should be 'transformers' or 'vllm'" in capsys.readouterr().err


def test_vllm_backend_without_vllm_is_a_clear_config_error(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ValidationError, match=r"vLLM is not installed; .*pip install 'eigenloop\[vllm\]'"):
        InferenceConfig(model=model_dir, backend="vllm")
    InferenceConfig(model=model_dir)  # the transformers backend does not need it


def test_vllm_backend_builds_the_engine_from_settings(
    fake_vllm: type[FakeLLM], model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="may not set gpu_memory_utilization"):
        InferenceConfig(model=model_dir, backend="vllm", vllm_engine_args={"gpu_memory_utilization": 0.5})
    for key, value in {
        "MODEL": str(model_dir),
        "BACKEND": "vllm",
        "GPU_MEMORY_UTILIZATION": "0.5",
        "TENSOR_PARALLEL_SIZE": "2",
        "DTYPE": "bfloat16",
        "MAX_MODEL_LEN": "48",
        "VLLM_ENGINE_ARGS": '{"max_num_seqs": 16, "enforce_eager": true}',
        "WEIGHTS_DIR": str(tmp_path),
        "HTTP_PORT": "-1",
    }.items():
        monkeypatch.setenv(f"EIGENLOOP_INFERENCE_{key}", value)
    [registration] = registrations(InferenceConfig())
    servicer: Any = registration.servicer
    try:
        assert isinstance(servicer.engine, VLLMEngine)
        assert servicer.engine.weights_dir == tmp_path
        kwargs = FakeLLM.made[-1].kwargs
        assert {k: kwargs[k] for k in ("gpu_memory_utilization", "tensor_parallel_size", "dtype", "max_model_len")} == {
            "gpu_memory_utilization": 0.5,
            "tensor_parallel_size": 2,
            "dtype": "bfloat16",
            "max_model_len": 48,
        }
        assert (kwargs["max_num_seqs"], kwargs["enforce_eager"]) == (16, True)
        info = servicer.GetModelInfo(ipb.GetModelInfoRequest(), None)
        assert (info.backend, info.max_model_len, list(info.eos_token_ids)) == ("vllm", 48, [TOKENIZER_EOS, CONFIG_EOS])
    finally:
        servicer.engine.close()
