"""Rollout benchmark: the rollout manager driving toy-domain episodes with a ~1M-parameter policy.

The policy is the embedded-mode default of ../shared/notes/learnability.md (Qwen2 h128 L4, tied embeddings, a
BPE tokenizer trained here on toy-domain text), randomly initialised: what is measured is the machinery, not the
agent. Episodes use the small-model prompt (no system prompt, no tool schemas: such models learn their tools
from SFT), at most 4 policy turns of at most 24 tokens, temperature 1, the procedural user.

    grpc_overhead_ratio           the same episodes (same seeds) with policy, toolenv and user_sim in this process
                                  vs as three gRPC services on loopback, in interleaved halves: wall time per
                                  episode gRPC / in-process (and the CPU per episode of each side)
    episodes_per_s_by_concurrency 1, 8, 32 and 64 episodes in flight through the services, the user_sim replica
                                  adding a fixed latency to every turn (like a remote LLM), and each rate as a
                                  share of linear scaling from 1 in flight
    batching_speedup              inference tokens/s for 32 requests submitted together vs one at a time
    prefix_cache_speedup          the same episodes (same seeds) in process with the engine's prefix cache vs without
                                  it (every turn re-encoding the whole history): episodes/s ratio
    episodes_per_s_1m_policy      through the three gRPC services, every live episode's turn batched together
                                  (and the CPU each process spent per episode, which bounds the rate on 2 cores)
    rss_growth_mb_per_10k         this process's RSS (the manager) after `--rss-episodes` more episodes, per 10,000

    python benchmarks/rollout.py [--episodes 512] [--rss-episodes 10000] [--latency-s 0.2] [--in-flight 128]
                                  [--max-batch-size N]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import Run, interleaved, write_result
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import load_domain, sample_tasks
from eigenloop.inference.engine import TransformersEngine
from eigenloop.models import build_model, save_model, train_tokenizer
from eigenloop.rollout.episode import EpisodeConfig
from eigenloop.rollout.manager import RolloutConfig, RolloutManager
from eigenloop.rollout.policy import LocalPolicy, RemotePolicy
from eigenloop.rollout.services import LocalEnvironments, LocalUsers, RemoteEnvironments, RemoteUsers
from eigenloop.usersim.policies import ProceduralUser
from tests.support import ServiceProcess

EPISODE = EpisodeConfig(
    max_turns=4, max_new_tokens=24, max_tokens=1024, temperature=1.0, system_prompt="", tools_in_prompt=False
)


def build_policy(out: Path) -> Path:
    domain = load_domain("toy")
    texts = [domain.policy, *(t.user.instruction for t in sample_tasks("toy"))]
    texts += [f'{{"name": "{t.name}", "arguments": {{"order_id": "O1000{i}"}}}}' for i, t in enumerate(domain.tools)]
    tokenizer = train_tokenizer(texts * 20, vocab_size=600)
    model = build_model("small", tokenizer, max_position_embeddings=1024)
    return save_model(out, tokenizer, model)


def tasks(n: int) -> Iterator[pb.Task]:
    return itertools.islice(itertools.cycle(sample_tasks("toy")), n)


def timed(manager: RolloutManager, n_tasks: int) -> tuple[int, float]:
    started = time.perf_counter()
    episodes = sum(len(g.trajectories) for g in manager.rollout(tasks(n_tasks)))
    return episodes, time.perf_counter() - started


def halves_of(manager: RolloutManager, n_tasks: int) -> Run:
    """A side of an interleaved comparison: each turn plays half of `n_tasks` (the same tasks every turn)."""
    return lambda turn: timed(manager, max(1, n_tasks // 2))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def batching_speedup(engine: TransformersEngine, prompts: list[list[int]]) -> dict[str, float]:
    params = pb.SamplingParams(temperature=1.0, max_new_tokens=32, seed=0)

    def tokens_per_s(submit_all: bool) -> float:
        started = time.perf_counter()
        if submit_all:
            generated = [f.result() for f in [engine.submit(p, params) for p in prompts]]
        else:
            generated = [engine.generate(p, params) for p in prompts]
        return sum(len(g.token_ids) for g in generated) / (time.perf_counter() - started)

    tokens_per_s(True)  # warm-up
    one, batched = tokens_per_s(False), tokens_per_s(True)
    return {
        "one_at_a_time_tokens_per_s": round(one, 1),
        "batched_tokens_per_s": round(batched, 1),
        "speedup": round(batched / one, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=512, help="episodes per throughput measurement")
    parser.add_argument("--rss-episodes", type=int, default=10_000)
    parser.add_argument("--latency-s", type=float, default=0.2, help="the latency-bound user's seconds per turn")
    parser.add_argument("--in-flight", type=int, default=128, help="episodes in flight for the throughput runs")
    parser.add_argument("--max-batch-size", type=int, default=0, help="the engine's largest batch; 0: --in-flight")
    args = parser.parse_args()
    max_batch = args.max_batch_size or args.in_flight
    torch.set_num_threads(1)  # two processes (this one and inference) share 2 cores: one thread each
    result: dict[str, Any] = {
        "episode": EPISODE.model_dump(),
        "in_flight": args.in_flight,
        "max_batch_size": max_batch,
    }

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        model_dir = build_policy(Path(tmp) / "policy")
        engine = TransformersEngine(model_dir, max_batch_size=max_batch)
        stack.callback(engine.close)
        result["policy_parameters"] = engine.num_parameters
        tokenizer = engine.tokenizer
        config = RolloutConfig(group_size=8, max_in_flight=args.in_flight, seed=0, episode=EPISODE)
        local = RolloutManager(
            LocalPolicy(engine), LocalEnvironments(), LocalUsers(ProceduralUser()), tokenizer, config
        )
        stack.callback(local.close)

        inference_args = ["--model", str(model_dir), "--http-port", "-1", "--max-batch-size", str(max_batch)]
        inference_args += ["--torch-threads", "1"]
        inference = stack.enter_context(ServiceProcess("eigenloop_inference.server", inference_args))
        toolenv = stack.enter_context(ServiceProcess("eigenloop_toolenv.server"))
        user_sim = stack.enter_context(ServiceProcess("eigenloop_user_sim.server", ["--max-concurrent-turns", "256"]))
        policy = RemotePolicy(inference.address)
        environments = RemoteEnvironments(toolenv.address)
        users = RemoteUsers(user_sim.address)
        for closer in (policy.close, environments.close, users.close):
            stack.callback(closer)
        remote = RolloutManager(policy, environments, users, tokenizer, config)
        stack.callback(remote.close)

        n_tasks = max(1, args.episodes // config.group_size)
        timed(local, 4), timed(remote, 4)  # warm-up: model load, JIT paths, connections
        pids = {"manager": os.getpid(), "inference": inference.proc.pid, "toolenv": toolenv.proc.pid}
        pids["user_sim"] = user_sim.proc.pid
        halves = interleaved(
            {
                "local": (halves_of(local, n_tasks), {"in_process": os.getpid()}),
                "remote": (halves_of(remote, n_tasks), pids),
            }
        )
        local_side, remote_side = halves["local"], halves["remote"]
        cpu_ms = {name: s * 1000 / sum(remote_side.episodes) for name, s in remote_side.cpu_s.items()}
        # What the episodes cost, whatever else ran on the machine: the rate 2 idle cores could sustain.
        result["grpc_cpu_ms_per_episode"] = {name: round(ms, 2) for name, ms in cpu_ms.items()}
        in_process_ms = local_side.cpu_s["in_process"] * 1000 / sum(local_side.episodes)
        result["in_process_cpu_ms_per_episode"] = round(in_process_ms, 2)
        result["episodes_per_s_1m_policy_cpu_bound_2_cores"] = round(2000 / sum(cpu_ms.values()), 1)
        # Wall time per episode, gRPC / in process.
        result["grpc_overhead_ratio"] = round(local_side.rate() / remote_side.rate(), 3)
        result["episodes_per_s_in_process"] = round(local_side.rate(), 1)
        result["episodes_per_s_1m_policy"] = round(remote_side.rate(), 1)
        result["target_episodes_per_s_1m_policy"] = 50

        # A latency-bound user_sim replica (every turn takes `latency_s`, like a remote LLM), through the services.
        slow_args = ["--max-concurrent-turns", "256", "--turn-latency-s", str(args.latency_s)]
        slow_user_sim = stack.enter_context(ServiceProcess("eigenloop_user_sim.server", slow_args))
        slow_users = RemoteUsers(slow_user_sim.address)
        stack.callback(slow_users.close)
        by_concurrency = {}
        for in_flight in (1, 8, 32, 64):
            cfg = RolloutConfig(group_size=1, max_in_flight=in_flight, seed=0, episode=EPISODE)
            with RolloutManager(policy, environments, slow_users, tokenizer, cfg) as m:
                timed(m, 2)
                episodes, seconds = timed(m, 8 * in_flight)
            by_concurrency[str(in_flight)] = round(episodes / seconds, 2)
        result["episodes_per_s_by_concurrency"] = by_concurrency
        result["concurrency_share_of_linear"] = {
            n: round(rate / (int(n) * by_concurrency["1"]), 2) for n, rate in by_concurrency.items()
        }
        result["user_latency_s"] = args.latency_s

        prompts = [
            tokenizer.encode(f"<|im_start|>user\n{t.user.instruction}<|im_end|>\n<|im_start|>assistant\n")
            for t in tasks(32)
        ]
        uncached = TransformersEngine(model_dir, max_batch_size=max_batch, prefix_cache_entries=0)
        stack.callback(uncached.close)
        without = RolloutManager(
            LocalPolicy(uncached), LocalEnvironments(), LocalUsers(ProceduralUser()), tokenizer, config
        )
        stack.callback(without.close)
        timed(without, 4)
        cache = interleaved({"with": (halves_of(local, n_tasks), {}), "without": (halves_of(without, n_tasks), {})})
        rates = {name: side.rates() for name, side in cache.items()}
        result["prefix_cache_episodes_per_s"] = {k: round(sum(v) / len(v), 1) for k, v in rates.items()}
        result["prefix_cache_speedup"] = round(sum(rates["with"]) / sum(rates["without"]), 2)

        batching = batching_speedup(engine, prompts)
        result["batching_speedup"] = batching.pop("speedup")
        result["batching"] = batching

        gc.collect()
        before = rss_mb()
        rss_tasks = max(1, args.rss_episodes // config.group_size)
        episodes, seconds = timed(remote, rss_tasks)
        gc.collect()
        after = rss_mb()
        result["rss_mb"] = {"before": round(before, 1), "after": round(after, 1), "episodes": episodes}
        result["rss_growth_mb_per_10k"] = round((after - before) * 10_000 / episodes, 2)
        result["episodes_per_s_rss_run"] = round(episodes / seconds, 1)
        result["stats_grpc"] = vars(remote.stats)
    write_result("rollout", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
