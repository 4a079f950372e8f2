"""The CUDA paths give what the CPU paths give (skipped without a CUDA GPU; CI has none).

The rest of the model tests run on CUDA too with `EIGENLOOP_TEST_DEVICE=cuda` (tests/support.py). Tried here, the
same model and inputs once on cpu and once on cuda: the inference engine's greedy and seeded sampled completions
(same tokens, logprobs within 1e-4); three SFT steps, then three GRPO steps with KL, SFT blending and the trainer's
own old logprobs (the same logged losses, and the same saved weights within float tolerance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from safetensors.torch import load_file  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from eigenloop.contracts.v1 import common_pb2 as pb  # noqa: E402
from eigenloop.inference.engine import TransformersEngine  # noqa: E402
from eigenloop.training.config import GRPOConfig, SFTConfig, parse_config  # noqa: E402
from eigenloop.training.grpo import run_grpo  # noqa: E402
from eigenloop.training.metrics import read_metrics  # noqa: E402
from eigenloop.training.sft import run_sft  # noqa: E402
from tests.llm_fixtures import build_tiny_chat_model  # noqa: E402
from tests.training.helpers import sft_config, write_tasks, write_trajectories  # noqa: E402

PROMPTS = [[5, 17, 30, 8, 99], [40], [7, 7, 7, 120, 3, 44, 61], [250, 12]]
LOSSES = ("policy_loss", "kl", "entropy", "sft_loss")


def completions(engine: TransformersEngine) -> list[tuple[list[int], list[float]]]:
    params = [pb.SamplingParams(max_new_tokens=16), pb.SamplingParams(max_new_tokens=16, temperature=1.0, seed=3)]
    futures = [engine.submit(prompt, p) for prompt in PROMPTS for p in params]  # submitted together: one batch
    return [(list(g.token_ids), list(g.logprobs)) for g in (f.result(timeout=60) for f in futures)]


def test_engine_on_cuda_generates_what_it_generates_on_cpu(tmp_path: Path) -> None:
    model_dir = build_tiny_chat_model(tmp_path / "model")
    results = {}
    for device in ("cpu", "cuda"):
        engine = TransformersEngine(model_dir, device=device, max_batch_size=8, batch_window_ms=50)
        try:
            assert engine.device.type == device
            results[device] = completions(engine)
        finally:
            engine.close()
    for (cpu_ids, cpu_lp), (gpu_ids, gpu_lp) in zip(results["cpu"], results["cuda"], strict=True):
        assert gpu_ids == cpu_ids
        assert gpu_lp == pytest.approx(cpu_lp, abs=1e-4)


def weights(model_dir: Path) -> dict[str, Any]:
    return load_file(str(model_dir / "model.safetensors"))


def assert_close(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4, msg=name)


def test_sft_and_grpo_on_cuda_train_like_on_cpu(tmp_path: Path) -> None:
    sft = {}
    for device in ("cpu", "cuda"):
        config = sft_config(tmp_path / device, steps=3)
        config["model"]["device"] = device
        sft[device] = run_sft(parse_config(SFTConfig, config)).model_dir
    assert_close(weights(sft["cpu"]), weights(sft["cuda"]))

    start = sft["cpu"]
    write_trajectories(tmp_path / "traj.jsonl", AutoTokenizer.from_pretrained(start))
    write_tasks(tmp_path / "tasks.jsonl")
    runs = {}
    for device in ("cpu", "cuda"):
        raw = {
            "run_dir": str(tmp_path / f"grpo-{device}"),
            "steps": 3,
            "threads": 1,
            "model": {"path": str(start), "device": device},
            "data": {"tasks": [str(tmp_path / "tasks.jsonl")], "max_length": 256},
            "rollouts": {"source": "file", "path": str(tmp_path / "traj.jsonl"), "tasks_per_step": 3},
            "loss": {"sft_weight": 0.1, "kl_coef": 0.05, "sft_batch_size": 2, "old_logprobs": "recompute"},
            "filter": {"max_staleness": None},
        }
        runs[device] = run_grpo(parse_config(GRPOConfig, raw))
    cpu_lines, gpu_lines = (read_metrics(tmp_path / f"grpo-{d}" / "metrics.jsonl") for d in ("cpu", "cuda"))
    for cpu_line, gpu_line in zip(cpu_lines, gpu_lines, strict=True):
        for key in LOSSES:
            assert gpu_line[key] == pytest.approx(cpu_line[key], rel=1e-3, abs=1e-5), key
    assert_close(weights(runs["cpu"].model_dir), weights(runs["cuda"].model_dir))
