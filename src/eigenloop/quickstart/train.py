"""Training stages of the quickstart: agent SFT, user-model SFT and GRPO, through eigenloop.training.

GRPO is the distributed loop on one machine: toolenv, user_sim (playing the user with the fine-tuned user
model) and inference (serving the policy) run as services on loopback; the rollout manager in this process
drives episodes through them, the trainer learns from the groups it hands over and pushes new weights to
inference after every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import read_tasks
from eigenloop.quickstart.config import USER_PROMPT, QuickstartConfig, SFTSection, agent_prompt
from eigenloop.rollout.episode import EpisodeConfig
from eigenloop.rollout.manager import RolloutConfig, RolloutManager
from eigenloop.rollout.policy import RemotePolicy
from eigenloop.rollout.services import RemoteEnvironments, RemoteUsers
from eigenloop.training.config import (
    DataConfig,
    FilterConfig,
    GRPOConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SFTConfig,
    SyncConfig,
)
from eigenloop.training.config import RolloutConfig as TrainRollouts
from eigenloop.training.curriculum import task_stream
from eigenloop.training.grpo import run_grpo
from eigenloop.training.rollouts import ManagerSource
from eigenloop.training.sft import run_sft
from eigenloop.training.sync import InferenceSync
from eigenloop.training.user_sft import run_user_sft

OnStep = Callable[[int, int, dict[str, float]], None]
MAX_LENGTH = 1024
# The user model answers greedily (as the paper's user simulator, at temperature 0) and briefly.
USER_SAMPLING = pb.SamplingParams(temperature=0.0, max_new_tokens=48)


def sft_config(
    config: QuickstartConfig, section: SFTSection, *, model: Path, tasks: Path, heldout: Path, out: Path
) -> SFTConfig:
    return SFTConfig(
        run_dir=out,
        seed=config.seed,
        steps=section.steps,
        batch_size=section.batch_size,
        # Dialogues padded per batch, not packed: packed rows need block-diagonal attention masks, which were
        # slower on CPU for dialogues of this length (measured 1.2-1.4x).
        packing=False,
        threads=config.threads,
        model=ModelConfig(path=str(model)),
        data=DataConfig(
            tasks=[tasks],
            eval_tasks=[heldout],
            max_length=MAX_LENGTH,
            user_prompt=USER_PROMPT,
            **agent_prompt(config),
        ),
        optim=OptimConfig(lr=section.lr),
        eval_every=max(section.steps // 4, 1),
    )


def train_sft(config: QuickstartConfig, *, user: bool, on_step: OnStep, **paths: Path) -> dict[str, Any]:
    section = config.user_sft if user else config.sft
    run = run_user_sft if user else run_sft
    result = run(sft_config(config, section, **paths), on_step=on_step)
    return {
        "model": str(result.model_dir),
        "steps": result.steps,
        "train_loss": result.train_loss,
        "eval_loss": result.eval_loss,
        "examples": result.examples,
    }


def episode_config(config: QuickstartConfig, temperature: float) -> EpisodeConfig:
    return EpisodeConfig(
        max_turns=config.eval.max_turns,
        max_tokens=MAX_LENGTH,
        max_new_tokens=96,
        temperature=temperature,
        **agent_prompt(config),
    )


def user_sim_settings(config: QuickstartConfig, user_model: Path, kind: str = "fine-tuned") -> dict[str, str]:
    if kind == "base":  # the rule-based procedural user: no fine-tuning, and not trained on this data's wording
        return {"EIGENLOOP_USER_SIM_POLICY": "procedural"}
    return {
        "EIGENLOOP_USER_SIM_POLICY": "llm",
        "EIGENLOOP_USER_SIM_LLM_PROMPT": USER_PROMPT,
        "EIGENLOOP_USER_SIM_LLM": f'{{"kind": "transformers", "model": "{user_model}"}}',
    }


def inference_settings(model: Path, batch: int) -> dict[str, str]:
    return {
        "EIGENLOOP_INFERENCE_MODEL": str(model),
        "EIGENLOOP_INFERENCE_MAX_BATCH_SIZE": str(batch),
        "EIGENLOOP_INFERENCE_BATCH_WINDOW_MS": "20",
        "EIGENLOOP_INFERENCE_HTTP_PORT": "-1",
    }


@contextmanager
def rollout_manager(
    addresses: dict[str, str],
    tokenizer: Any,
    *,
    group_size: int,
    temperature: float,
    config: QuickstartConfig,
    ahead: int,
) -> Iterator[RolloutManager]:
    """A manager over the local services; on exit it and its clients (channels, multiplexed streams) are closed."""
    with ExitStack() as stack:
        policy = RemotePolicy(addresses["inference"])
        stack.callback(policy.close)
        environments = RemoteEnvironments(addresses["toolenv"])
        stack.callback(environments.close)
        users = RemoteUsers(addresses["user_sim"], sampling=USER_SAMPLING)
        stack.callback(users.close)
        rollout = RolloutConfig(
            group_size=group_size,
            max_in_flight=64,
            max_ready_groups=ahead,
            seed=config.seed,
            episode=episode_config(config, temperature),
        )
        yield stack.enter_context(RolloutManager(policy, environments, users, tokenizer, rollout))


def train_grpo(
    config: QuickstartConfig, addresses: dict[str, str], *, sft_model: Path, tasks: Path, out: Path, on_step: OnStep
) -> dict[str, Any]:
    g = config.grpo
    grpo = GRPOConfig(
        run_dir=out,
        seed=config.seed,
        steps=g.steps,
        threads=config.threads,
        model=ModelConfig(path=str(sft_model)),
        data=DataConfig(tasks=[tasks], eval_fraction=0.0, max_length=MAX_LENGTH, **agent_prompt(config)),
        optim=OptimConfig(lr=g.lr, warmup_fraction=0.0, min_lr_fraction=1.0),
        filter=FilterConfig(zero_variance=g.zero_variance_filter, refill=g.refill),
        loss=LossConfig(sft_weight=g.sft_weight),
        rollouts=TrainRollouts(tasks_per_step=g.tasks_per_step, group_size=g.group_size, task_sampling=g.task_sampling),
        sync=SyncConfig(inference=[addresses["inference"]]),
        checkpoint={"every": max(g.steps // 2, 1), "keep_last": 1},  # type: ignore[arg-type]
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(sft_model))
    stream = task_stream(g.task_sampling, read_tasks(tasks), config.seed)
    with rollout_manager(
        addresses, tokenizer, group_size=g.group_size, temperature=1.0, config=config, ahead=g.tasks_per_step
    ) as manager:
        result = run_grpo(grpo, source=ManagerSource(manager, stream), sync=InferenceSync(grpo.sync), on_step=on_step)
    stats = manager.stats
    return {
        "model": str(result.model_dir),
        "steps": result.steps,
        "policy_version": result.policy_version,
        "episodes": stats.episodes,
        "simulator_invalid": stats.simulator_invalid,
        "infra_dropped": stats.dropped,
        "format_errors": stats.format_errors,
        "tasks": stream.state(),
    }
