"""eigenloop GRPO vs TRL's GRPOTrainer, end to end, on the same tiny model, tasks and number of episodes.

Both play the same multi-turn episodes with the same machinery (eigenloop's rollout manager: toy-domain tasks,
procedural users, an in-process toolenv, a batching transformers engine), so what differs is the training loop:

* eigenloop: `run_grpo` with live rollouts from the manager through a gRPC inference server in the same process.
  Rollouts run ahead of the trainer by one step (bounded staleness), trajectories are packed into rows, one
  optimizer step per batch, weights pushed to inference after each step.
* TRL: `GRPOTrainer` with a `rollout_func` that copies the trainer's weights into the engine, plays the step's
  episodes (synchronously: TRL generates, then trains) and returns prompt ids, completion ids (everything after the
  first policy turn), the policy-token mask (`env_mask`) and the sampler's logprobs; rewards come back as a field.

Settings shared as far as TRL allows: G samples per task, tasks per step, steps, lr, clip eps 0.4, no KL, token-level
aggregation (TRL `dapo`, eigenloop `token`), batch-level std scaling, no zero-variance filtering (TRL has none),
no gradient checkpointing (TRL's GRPO turns it on by default; switched off here, as eigenloop does not use it).
Each side runs in its own process; peak RSS is that process's (trainer and inference together). torch runs one
intra-op thread per process (BENCH_THREADS): on a shared 2-core machine two OpenMP threads spin against each other
and against other processes, which made every number 10-40x slower and noisy in trials.

    python benchmarks/trainer.py            # writes benchmarks/results/trainer.json
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "results" / "trainer.json"
STEPS = 6
GROUP = 4
MAX_NEW_TOKENS = 24
MAX_TURNS = 3
MAX_LENGTH = 512
LR = 1e-4
SEED = 0
PROMPT = "You are a support agent. Use your tools."


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model(out: Path) -> Path:
    """A freshly initialised `small` model (~0.9M parameters), its tokenizer trained on toy-domain text."""
    from eigenloop.domains import load_domain, sample_tasks
    from eigenloop.models import build_model as build
    from eigenloop.models import save_model, train_tokenizer

    domain = load_domain("toy")
    texts = [domain.policy] + [t.user.instruction for t in sample_tasks("toy")]
    texts += [f'<tool_call>{{"name": "{t.name}", "arguments": {{}}}}</tool_call>' for t in domain.agent_tools]
    tokenizer = train_tokenizer(texts * 4, vocab_size=600)
    return save_model(out, tokenizer, build("small", tokenizer, seed=SEED))


def episode_config() -> Any:
    from eigenloop.rollout.episode import EpisodeConfig

    return EpisodeConfig(
        max_turns=MAX_TURNS,
        max_tokens=MAX_LENGTH,
        max_new_tokens=MAX_NEW_TOKENS,
        temperature=1.0,
        system_prompt=PROMPT,
        tools_in_prompt=False,
    )


def run_eigenloop(model: Path, work: Path, *, grpc_inference: bool) -> dict[str, Any]:
    """Embedded (the engine in this process, like TRL's side) or through a gRPC inference server."""
    from concurrent import futures

    import grpc

    from eigenloop.contracts.v1 import inference_pb2_grpc
    from eigenloop.domains import sample_tasks
    from eigenloop.inference.engine import TransformersEngine
    from eigenloop.rollout.manager import RolloutConfig, RolloutManager
    from eigenloop.rollout.policy import LocalPolicy, PolicyClient, RemotePolicy
    from eigenloop.rollout.services import LocalEnvironments, LocalUsers
    from eigenloop.training.config import GRPOConfig, parse_config
    from eigenloop.training.curriculum import UniformTasks
    from eigenloop.training.grpo import run_grpo
    from eigenloop.training.rollouts import ManagerSource
    from eigenloop.training.sync import EngineSync, InferenceSync, WeightSync
    from eigenloop.usersim.policies import ProceduralUser
    from eigenloop_inference.server import InferenceServicer

    tasks = sample_tasks("toy")
    engine = TransformersEngine(model, max_batch_size=len(tasks) * GROUP, batch_window_ms=5)
    server = None
    policy: PolicyClient
    sync: WeightSync
    if grpc_inference:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(engine, 1 << 30), server)
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        server.start()
        policy = RemotePolicy(address)
    else:
        policy = LocalPolicy(engine)
    config = parse_config(
        GRPOConfig,
        {
            "run_dir": str(work / ("eigenloop-grpc" if grpc_inference else "eigenloop")),
            "seed": SEED,
            "steps": STEPS,
            "model": {"path": str(model)},
            "data": {"max_length": MAX_LENGTH, "system_prompt": PROMPT, "tools_in_prompt": False},
            "optim": {"lr": LR, "warmup_fraction": 0.0, "min_lr_fraction": 1.0},
            "filter": {"zero_variance": False, "max_staleness": 1},
            "loss": {"clip_eps": 0.4, "aggregation": "token", "kl_coef": 0.0},
            "rollouts": {"tasks_per_step": len(tasks), "group_size": GROUP},
            "sync": {"inference": [address] if grpc_inference else []},
            "checkpoint": {"every": 10_000},
        },
    )
    sync = InferenceSync(config.sync) if grpc_inference else EngineSync(engine)
    manager_config = RolloutConfig(
        group_size=GROUP,
        max_in_flight=len(tasks) * GROUP,
        max_ready_groups=len(tasks),
        max_staleness=1,
        seed=SEED,
        episode=episode_config(),
    )
    totals = {"policy_tokens": 0.0, "rollout_wait_s": 0.0, "train_s": 0.0, "sync_s": 0.0}

    def on_step(step: int, total: int, values: dict[str, float]) -> None:
        for key in totals:
            totals[key] += values.get(key, 0.0)

    started = time.perf_counter()
    tokenizer = engine.tokenizer
    with RolloutManager(
        policy, LocalEnvironments(), LocalUsers(ProceduralUser()), tokenizer, manager_config
    ) as manager:
        source = ManagerSource(manager, UniformTasks(tasks, SEED))
        result = run_grpo(config, source=source, sync=sync, on_step=on_step)
        stats = manager.stats
    wall = time.perf_counter() - started
    if server is not None:
        server.stop(grace=None)
    engine.close()
    return {
        "wall_s": wall,
        "steps": result.steps,
        "episodes": result.steps * len(tasks) * GROUP,
        "policy_tokens_trained": totals.pop("policy_tokens"),
        "peak_rss_mb": peak_rss_mb(),
        "split_s": totals,
        "stale_groups_dropped": stats.stale_dropped,
        "groups_played": stats.groups + stats.stale_dropped,
    }


def run_trl(model: Path, work: Path) -> dict[str, Any]:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from eigenloop.domains import sample_tasks
    from eigenloop.inference.engine import TransformersEngine
    from eigenloop.rollout.manager import RolloutConfig, RolloutManager
    from eigenloop.rollout.policy import LocalPolicy
    from eigenloop.rollout.services import LocalEnvironments, LocalUsers
    from eigenloop.training.sync import weights_blob
    from eigenloop.usersim.policies import ProceduralUser

    tasks = {t.id: t for t in sample_tasks("toy")}
    tokenizer = AutoTokenizer.from_pretrained(model)
    engine = TransformersEngine(model, max_batch_size=len(tasks) * GROUP, batch_window_ms=5)
    manager = RolloutManager(
        LocalPolicy(engine),
        LocalEnvironments(),
        LocalUsers(ProceduralUser()),
        tokenizer,
        RolloutConfig(
            group_size=GROUP,
            max_in_flight=len(tasks) * GROUP,
            max_ready_groups=len(tasks),
            seed=SEED,
            episode=episode_config(),
        ),
    )
    policy_tokens = 0
    split = {"rollout_s": 0.0, "sync_s": 0.0}

    def rollout_func(prompts: list[str], trainer: Any) -> dict[str, Any]:
        nonlocal policy_tokens
        started = time.perf_counter()
        engine.update_weights(weights_blob(trainer.model), engine.version + 1)  # TRL's weight sync, same cost
        split["sync_s"] += time.perf_counter() - started
        started = time.perf_counter()
        # TRL's sampler repeats each drawn prompt G times in a row and wants one completion per entry: play each
        # block of G as one group and hand its samples out in order (a task drawn twice is played twice).
        pool: dict[str, list[Any]] = {}
        for group in manager.rollout([tasks[p] for p in prompts[::GROUP]]):
            pool.setdefault(group.task.id, []).extend(group.trajectories)
        samples = {task_id: iter(trajectories) for task_id, trajectories in pool.items()}
        keys = ("prompt_ids", "completion_ids", "logprobs", "env_mask", "reward")
        out: dict[str, list[Any]] = {key: [] for key in keys}
        for prompt in prompts:
            t = next(samples[prompt])
            ids, mask, lps = list(t.tokens.token_ids), list(t.tokens.policy_mask), list(t.tokens.logprobs)
            first = mask.index(1) if 1 in mask else len(ids) - 1
            out["prompt_ids"].append(ids[:first])
            out["completion_ids"].append(ids[first:])
            out["env_mask"].append(mask[first:])
            out["logprobs"].append(lps[first:])
            out["reward"].append(t.reward.value)
            policy_tokens += sum(mask)
        split["rollout_s"] += time.perf_counter() - started
        return out

    def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        return [float(r) for r in kwargs["reward"]]

    args = GRPOConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=len(tasks) * GROUP,
        num_generations=GROUP,
        max_steps=STEPS,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=0.0,
        epsilon=0.4,
        loss_type="dapo",
        scale_rewards="batch",
        max_completion_length=MAX_LENGTH,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=SEED,
        max_grad_norm=1.0,
        gradient_checkpointing=False,  # TRL's GRPO default is on; eigenloop does not checkpoint
        disable_tqdm=True,
    )
    dataset = Dataset.from_list([{"prompt": task_id} for task_id in tasks] * STEPS * 2)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model),
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        rollout_func=rollout_func,
    )
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    manager.close()
    engine.close()
    return {
        "wall_s": wall,
        "steps": STEPS,
        "episodes": STEPS * len(tasks) * GROUP,
        "policy_tokens_trained": policy_tokens,
        "peak_rss_mb": peak_rss_mb(),
        "split_s": {**split, "train_and_rest_s": wall - split["rollout_s"] - split["sync_s"]},
    }


def child(side: str, model: Path, work: Path) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    if side == "trl":
        result = run_trl(model, work)
    else:
        result = run_eigenloop(model, work, grpc_inference=side == "eigenloop-grpc")
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_model(work / "model")
        results = {}
        for side in ("eigenloop", "eigenloop-grpc", "trl"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", side, str(model), str(work)],
                capture_output=True,
                text=True,
                check=False,
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                raise SystemExit(f"{side} failed:\n{done.stderr[-4000:]}")
            results[side] = json.loads(lines[-1][len("RESULT ") :])
            print(side, results[side], flush=True)
    import trl

    ours, theirs = results["eigenloop"], results["trl"]
    summary = {
        "speedup_vs_trl": theirs["wall_s"] / ours["wall_s"],
        "speedup_vs_trl_grpc_inference": theirs["wall_s"] / results["eigenloop-grpc"]["wall_s"],
        "peak_rss_mb": {"eigenloop": ours["peak_rss_mb"], "trl": theirs["peak_rss_mb"]},
        "episodes_per_s": {side: r["episodes"] / r["wall_s"] for side, r in results.items()},
        "policy_tokens_per_s": {side: r["policy_tokens_trained"] / r["wall_s"] for side, r in results.items()},
        "runs": results,
        "setup": {
            "model": "eigenloop.models preset small (~0.9M parameters), random init",
            "domain": "toy (4 built-in tasks), procedural users, in-process toolenv",
            "steps": STEPS,
            "tasks_per_step": 4,
            "group_size": GROUP,
            "max_turns": MAX_TURNS,
            "max_new_tokens": MAX_NEW_TOKENS,
            "trl_version": trl.__version__,
            "threads": int(os.environ.get("BENCH_THREADS", "1")),
            "runs": 1,
            "note": "CPU only, one run each, on a machine shared with other work: timings are indicative",
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
