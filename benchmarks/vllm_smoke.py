"""GPU smoke check of the inference service's vllm backend (VLLMEngine): generation, batching, weight updates.

Needs a CUDA GPU and vLLM (`pip install 'eigenloop[vllm]'`, or the inference-cuda image); without either it says so
and exits 2. Steps:

1. the model: --model DIR when it holds one; otherwise a small random Qwen2 is built there (a BPE tokenizer trained
   on toy-domain text, head dim 64 so that every vLLM attention backend takes it, the EOS row of the LM head zeroed
   so greedy completions run to their length limit);
2. greedy baselines for a few prompts, one request at a time, and an OpenAI chat completion through ChatFrontend
   (the tokenizer vLLM hands out must work there);
3. throughput: --requests seeded sampled requests submitted at once from as many threads (vLLM batches them), then
   the first 8 of them one at a time: generated tokens/s both ways;
4. logprobs: the baselines' per-token logprobs against transformers' log_softmax over the same sequences (fp32);
5. weight updates: version 1 = the checkpoint's own weights (greedy must not change), version 2 = perturbed weights
   (greedy must change: the weights really are loaded), version 3 = the checkpoint again (greedy back to baseline);
   each version must be reported by info() and by the generations after it; closing the engine must give its GPU
   memory back;
6. the inference service: the server process with `--backend vllm` (the engine above closed first), reached as the
   rollout manager reaches it (RemotePolicy: keys of one GenerateMany stream): its greedy completions must be the
   engine's, before and after an UpdateWeights streamed in chunks as the trainer sends them; GetModelInfo, the
   OpenAI /v1/models route, and a clean exit on SIGTERM.

Writes benchmarks/results/vllm_smoke.json; exits 1 when a check fails.

    python benchmarks/vllm_smoke.py [--model DIR] [--requests 64] [--max-new-tokens 64] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.inference.vllm_engine import VLLM_INSTALL_HINT, vllm_installed

PROMPTS = [
    "where is my order O10001?",
    "I want to return the blue mug",
    "cancel order O10007 please",
    "what is your refund policy for damaged items?",
]


def build_model(out: Path) -> Path:
    """A ~2M-parameter random Qwen2 with a toy-domain tokenizer, saved in the transformers layout."""
    import torch

    from eigenloop.domains import load_domain, sample_tasks
    from eigenloop.models import ModelPreset, save_model, train_tokenizer
    from eigenloop.models import build_model as build_lm

    domain = load_domain("toy")
    texts = [domain.policy, *(t.user.instruction for t in sample_tasks("toy")), *PROMPTS]
    tokenizer = train_tokenizer(texts * 20, vocab_size=600)
    model = build_lm(
        ModelPreset(
            hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=512
        ),
        tokenizer,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    return save_model(out, tokenizer, model)


def checkpoint_blob(model_dir: Path, noise: float = 0.0) -> bytes:
    """The checkpoint's tensors as one safetensors blob, floats perturbed by `noise` x N(0, 1) when asked."""
    import torch
    from safetensors.torch import load_file, save

    tensors: dict[str, Any] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    if noise:
        generator = torch.Generator().manual_seed(0)
        tensors = {
            name: t + noise * torch.randn(t.shape, generator=generator, dtype=t.dtype) if t.is_floating_point() else t
            for name, t in tensors.items()
        }
    return save(tensors)


def greedy(engine: Any, prompts: list[list[int]], max_new_tokens: int) -> list[Any]:
    params = pb.SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    return [engine.generate(p, params, timeout_s=300) for p in prompts]


def tokens_per_s(engine: Any, prompts: list[list[int]], max_new_tokens: int, concurrent: bool) -> tuple[float, int]:
    """Generated tokens per second over `prompts` (seeded sampling), submitted at once or one after another."""

    def one(i: int) -> int:
        params = pb.SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, seed=i)
        return len(engine.generate(prompts[i % len(prompts)], params, timeout_s=600).token_ids)

    started = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(prompts)) as pool:
            tokens = sum(pool.map(one, range(len(prompts))))
    else:
        tokens = sum(one(i) for i in range(len(prompts)))
    return tokens / (time.perf_counter() - started), tokens


def gpu_memory_back(free_before: int, slack: int = 2 << 30, timeout_s: float = 60) -> bool:
    """Whether the GPU's free memory returns to within `slack` of `free_before` (this process keeps its own CUDA
    context and cached blocks) while vLLM's engine process exits."""
    import torch

    deadline = time.monotonic() + timeout_s
    while torch.cuda.mem_get_info()[0] < free_before - slack:
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def service_checks(
    model_dir: Path,
    args: argparse.Namespace,
    prompts: list[list[int]],
    expected: dict[int, list[list[int]]],
    perturbed: bytes,
    check: Any,
) -> float:
    """Step 6 against a server process; `expected` holds the engine's greedy tokens of the checkpoint's weights (0)
    and of `perturbed` (1). Returns the server's start-up time in seconds."""
    import grpc

    from eigenloop.contracts.v1 import inference_pb2 as ipb
    from eigenloop.contracts.v1 import inference_pb2_grpc
    from eigenloop.launcher import LauncherError, Replica, free_port, wait_serving
    from eigenloop.rollout.policy import RemotePolicy
    from eigenloop.training.sync import weight_chunks

    port, http_port = free_port(), free_port()
    command = [sys.executable, "-m", "eigenloop_inference.server", "--model", str(model_dir), "--backend", "vllm"]
    command += ["--dtype", args.dtype, "--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    command += ["--port", str(port), "--http-port", str(http_port), "--log-json", "false"]
    log_path = Path(tempfile.mkdtemp(prefix="vllm-smoke-server-")) / "server.log"
    started = time.perf_counter()
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    replica = Replica("inference", 0, server.pid, port, 0, str(log_path))
    try:
        try:
            wait_serving([replica], timeout_s=600)
        except LauncherError as err:
            print(err, file=sys.stderr)
            check(False, "the vllm inference server started")
            return time.perf_counter() - started
        startup_s = time.perf_counter() - started
        check(True, "the vllm inference server started")
        policy, channel = RemotePolicy(replica.address), grpc.insecure_channel(replica.address)
        try:
            stub = inference_pb2_grpc.InferenceStub(channel)
            check(policy.info.backend == "vllm", "GetModelInfo: backend vllm")
            sampling = pb.SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
            for version, tokens in sorted(expected.items()):
                if version:
                    reply = stub.UpdateWeights(weight_chunks(perturbed, version, 1 << 20), timeout=120)
                    check(reply.policy_version.version == version, f"UpdateWeights streamed: version {version}")
                # One at a time, as the engine's were: vLLM's batched kernels may round differently.
                samples = [policy.generate(p, sampling, timeout_s=120) for p in prompts]
                check([s.token_ids for s in samples] == tokens, f"service greedy = engine greedy, version {version}")
                check(all(s.policy_version == version for s in samples), f"service reports version {version}")
            info = stub.GetModelInfo(ipb.GetModelInfoRequest(), timeout=30)
            check(info.policy_version.version == max(expected), "GetModelInfo reports the last version")
        finally:
            channel.close()
            policy.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/models", timeout=30) as response:
            check(response.status == 200 and model_dir.name in response.read().decode(), "OpenAI /v1/models")
        server.send_signal(signal.SIGTERM)
        check(server.wait(timeout=120) == 0, "the server exits 0 on SIGTERM")
        return startup_s
    finally:
        if server.poll() is None:
            server.kill()


def transformers_logprobs(model_dir: Path, prompts: list[list[int]], generations: list[Any]) -> float:
    """Largest |vLLM logprob - transformers logprob| over every baseline token (transformers in fp32 on the GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).cuda().eval()
    worst = 0.0
    with torch.inference_mode():
        for prompt, generation in zip(prompts, generations, strict=True):
            ids = torch.tensor([prompt + generation.token_ids], device="cuda")
            logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
            positions = torch.arange(len(prompt) - 1, ids.shape[1] - 1, device="cuda")
            reference = logprobs[positions, ids[0, len(prompt) :]].tolist()
            worst = max(worst, *(abs(a - b) for a, b in zip(reference, generation.logprobs, strict=True)))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GPU smoke check of the inference service's vllm backend")
    parser.add_argument("--model", type=Path, help="model directory; built there (or in a temp dir) when missing")
    parser.add_argument("--requests", type=int, default=64, help="requests submitted at once")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16", choices=["auto", "float16", "bfloat16", "float32"])
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--logprob-tolerance", type=float, default=0.1, help="vs transformers in fp32")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("vllm_smoke: no CUDA GPU here; the vllm backend is GPU only", file=sys.stderr)
        return 2
    if not vllm_installed():
        print(f"vllm_smoke: vLLM is not installed; {VLLM_INSTALL_HINT}", file=sys.stderr)
        return 2
    import vllm

    from eigenloop.inference.openai_http import ChatFrontend
    from eigenloop.inference.vllm_engine import VLLMEngine

    model_dir = args.model or Path(tempfile.mkdtemp(prefix="vllm-smoke-")) / "policy"
    if not (model_dir / "config.json").is_file():
        build_model(model_dir)
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            failures.append(what)

    free_before = torch.cuda.mem_get_info()[0]
    started = time.perf_counter()
    engine = VLLMEngine(model_dir, dtype=args.dtype, gpu_memory_utilization=args.gpu_memory_utilization)
    startup_s = time.perf_counter() - started
    try:
        prompts = [[int(t) for t in engine.tokenizer(p)["input_ids"]] for p in PROMPTS]
        baseline = greedy(engine, prompts, args.max_new_tokens)
        check(all(len(g.logprobs) == len(g.token_ids) == args.max_new_tokens for g in baseline), "a logprob per token")
        check(all(g.policy_version == 0 and g.finish_reason == "length" for g in baseline), "version 0, finish length")
        chat = ChatFrontend(engine).chat({"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 8})
        check(chat["eigenloop"]["policy_version"] == 0, "an OpenAI chat completion through vLLM's tokenizer")

        requests = [prompts[i % len(prompts)] for i in range(args.requests)]
        concurrent, concurrent_tokens = tokens_per_s(engine, requests, args.max_new_tokens, concurrent=True)
        sequential, _ = tokens_per_s(engine, requests[:8], args.max_new_tokens, concurrent=False)
        # Sampling may draw EOS (its logit is 0, not -inf), so a request may end early, but never empty.
        check(concurrent_tokens >= args.requests, "every concurrent request got tokens")

        logprob_diff = transformers_logprobs(model_dir, prompts, baseline)
        check(logprob_diff <= args.logprob_tolerance, f"logprobs match transformers within {args.logprob_tolerance}")

        same, perturbed = checkpoint_blob(model_dir), checkpoint_blob(model_dir, noise=0.05)
        expected = {0: [g.token_ids for g in baseline]}
        update_s = []
        for version, blob, expect_baseline in ((1, same, True), (2, perturbed, False), (3, same, True)):
            started = time.perf_counter()
            engine.update_weights(blob, version, checkpoint=f"smoke:{version}")
            update_s.append(round(time.perf_counter() - started, 3))
            check(engine.info().version == version, f"info() reports version {version}")
            after = greedy(engine, prompts, args.max_new_tokens)
            check(all(g.policy_version == version for g in after), f"generations report version {version}")
            unchanged = [a.token_ids for a in after] == [b.token_ids for b in baseline]
            what = "greedy unchanged" if expect_baseline else "greedy changed"
            check(unchanged == expect_baseline, f"version {version}: {what}")
            if not expect_baseline:
                expected[1] = [g.token_ids for g in after]
    finally:
        engine.close()
    check(gpu_memory_back(free_before), "closing the engine gives its GPU memory back")
    server_startup_s = service_checks(model_dir, args, prompts, expected, perturbed, check)

    write_result(
        "vllm_smoke",
        {
            "gpu": torch.cuda.get_device_name(0),
            "vllm_version": vllm.__version__,
            "dtype": args.dtype,
            "startup_s": round(startup_s, 1),
            "server_startup_s": round(server_startup_s, 1),
            "requests": args.requests,
            "max_new_tokens": args.max_new_tokens,
            "tokens_per_s_concurrent": round(concurrent, 1),
            "tokens_per_s_one_at_a_time": round(sequential, 1),
            "batching_speedup": round(concurrent / sequential, 2),
            "logprob_max_abs_diff_vs_transformers_fp32": round(logprob_diff, 5),
            "update_s_by_version": update_s,
            "failures": failures,
        },
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
