"""GRPO over multi-turn tool-use episodes: group-relative advantages, dynamic filtering, a clipped importance-ratio
loss on the policy's own tokens, optional KL to the initial policy and an SFT loss blended in.

One step: take `tasks_per_step` groups of G trajectories from the rollout source; drop what carries no usable
signal (`filter_groups`); turn rewards into one advantage per trajectory (`advantages`), broadcast to every token
the policy sampled in it; lay the trajectories out in packed rows; one optimizer step on `grpo_loss` (+ the SFT
blend); push the new weights to every inference replica. Each piece reads its switch from GRPOConfig, so an
ablation is one line of YAML. The functions work on plain `pb.Trajectory` groups, so they are testable by hand.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.training.config import AdvantageConfig, FilterConfig, GRPOConfig, LossConfig, RewardConfig
from eigenloop.training.data import Cursor, EmptyDatasetError, Example, Rows, agent_examples_for, load_tasks, usable
from eigenloop.training.rollouts import RolloutSource, open_source
from eigenloop.training.run import StepResult, Timer, TrainingError, TrainingRun, target_weights, token_logprobs
from eigenloop.training.sft import lay_out_batch, sft_loss
from eigenloop.training.sync import WeightSync, open_sync

Group = list[pb.Trajectory]
OnStep = Callable[[int, int, dict[str, float]], None]


def staleness(trajectory: pb.Trajectory, policy_version: int) -> int:
    """Policy versions between the oldest turn of the trajectory and the policy being trained."""
    versions = [t.policy_version for t in trajectory.tokens.turns]
    return policy_version - min(versions) if versions else 0


def filter_groups(
    groups: Sequence[Group], config: FilterConfig, *, policy_version: int, max_length: int
) -> tuple[list[Group], Counter[str]]:
    """The groups (and, within them, the episodes) worth training on, and what was dropped by reason.

    Episodes: INFRA_FAILED and SIMULATOR_INVALID (never scored), too stale, without policy tokens (nothing to
    train), longer than max_length. Groups: fewer than two episodes left (no baseline), or all rewards equal (zero
    variance: every advantage would be 0). Episode reasons count episodes; group reasons count groups.
    """
    dropped: Counter[str] = Counter()
    kept: list[Group] = []
    for group in groups:
        survivors: Group = []
        for trajectory in group:
            reason = _episode_reason(trajectory, config, policy_version, max_length)
            if reason is None:
                survivors.append(trajectory)
            else:
                dropped[reason] += 1
        if len(survivors) < 2:
            dropped["group_too_small"] += 1
        elif config.zero_variance and len({t.reward.value for t in survivors}) == 1:
            dropped["zero_variance"] += 1
        else:
            kept.append(survivors)
    return kept, dropped


def draw_groups(source: RolloutSource, config: GRPOConfig, policy_version: int) -> list[Group]:
    """A step's groups: `rollouts.tasks_per_step` of them, and with `filter.refill` more, until that many survive
    `filter_groups` or `filter.max_draw_factor` times as many were drawn. Each draw asks only for what is missing,
    so no more than `tasks_per_step` groups survive."""
    wanted = config.rollouts.tasks_per_step
    groups = source.groups(wanted, policy_version)
    if not config.filter.refill:
        return groups
    limit = wanted * config.filter.max_draw_factor
    while len(groups) < limit:
        kept, _ = filter_groups(groups, config.filter, policy_version=policy_version, max_length=config.data.max_length)
        if len(kept) == wanted:
            break
        groups += source.groups(min(wanted - len(kept), limit - len(groups)), policy_version)
    return groups


def _episode_reason(trajectory: pb.Trajectory, config: FilterConfig, version: int, max_length: int) -> str | None:
    status = trajectory.status
    if status == pb.EPISODE_STATUS_INFRA_FAILED and config.infra_failed:
        return "infra_failed"
    if status == pb.EPISODE_STATUS_SIMULATOR_INVALID and config.simulator_invalid:
        return "simulator_invalid"
    if config.max_staleness is not None and staleness(trajectory, version) > config.max_staleness:
        return "stale"
    if not any(trajectory.tokens.policy_mask):
        return "no_policy_tokens"
    if len(trajectory.tokens.token_ids) > max_length:
        return "too_long"
    return None


def scaled_reward(trajectory: pb.Trajectory, config: RewardConfig) -> float:
    return config.scale * trajectory.reward.value + config.bias


def advantages(groups: Sequence[Group], reward: RewardConfig, config: AdvantageConfig) -> list[list[float]]:
    """One advantage per trajectory: scaled reward minus the group mean (optionally over the group std), then
    divided by the std of all advantages in the batch (population std)."""
    out: list[list[float]] = []
    for group in groups:
        scores = [scaled_reward(t, reward) for t in group]
        mean = statistics.fmean(scores) if config.group_baseline else 0.0
        values = [s - mean for s in scores]
        if config.group_std_norm:
            std = statistics.pstdev(scores)
            values = [v / (std + config.eps) for v in values]
        out.append(values)
    if config.batch_std_norm:
        flat = [v for values in out for v in values]
        std = statistics.pstdev(flat) if len(flat) > 1 else 0.0
        out = [[v / (std + config.eps) for v in values] for values in out]
    return out


@dataclass(frozen=True)
class PolicyBatch:
    """Trajectories as training sequences, with the per-token aggregation weights the loss needs."""

    examples: list[Example]
    weights: list[list[float]]
    old_logprobs: list[list[float]]
    advantages: list[float]
    policy_tokens: int


def policy_batch(groups: Sequence[Group], advantage: Sequence[Sequence[float]], config: LossConfig) -> PolicyBatch:
    """Token weights that make `sum(weight * per-token loss)` the configured aggregate over the whole batch:
    token-level (every policy token counts the same) or sequence-level (every trajectory counts the same)."""
    trajectories = [t for group in groups for t in group]
    flat = [a for values in advantage for a in values]
    masks = [list(t.tokens.policy_mask) for t in trajectories]
    total = sum(sum(m) for m in masks)
    examples, weights, old = [], [], []
    for trajectory, mask in zip(trajectories, masks, strict=True):
        n = sum(mask)
        scale = 1.0 / total if config.aggregation == "token" else 1.0 / (n * len(trajectories))
        examples.append(Example(list(trajectory.tokens.token_ids), mask, trajectory.group_id))
        weights.append([m * scale for m in mask])
        logprobs = list(trajectory.tokens.logprobs)
        old.append(logprobs if len(logprobs) == len(mask) else [0.0] * len(mask))
    return PolicyBatch(examples, weights, old, flat, total)


def grpo_loss(
    model: Any, rows: Rows, config: LossConfig, reference: Any | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped importance-ratio policy loss (+ k3 KL to `reference`) over the rows' weighted policy tokens.

    `rows.weights` already hold the aggregation (see `policy_batch`), so the sum is the batch's loss.
    """
    logprobs, entropy = token_logprobs(model, rows, entropy=True)
    assert entropy is not None
    weights = target_weights(rows)
    mask = (weights > 0).float()
    old = rows.old_logprobs[:, 1:]
    adv = rows.advantages[:, 1:]
    ratio = torch.exp(logprobs - old)
    low = 1.0 - config.clip_eps
    high = 1.0 + (config.clip_eps if config.clip_eps_high is None else config.clip_eps_high)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, low, high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    loss = (per_token * weights).sum()
    values = {
        "policy_loss": float(loss.detach()),
        "clipped_tokens": float(((clipped < unclipped).float() * mask).sum()),
        "entropy_sum": float((entropy.detach() * mask).sum()),
        "ratio_sum": float((ratio.detach() * mask).sum()),
        "policy_tokens": float(mask.sum()),
    }
    if reference is not None and config.kl_coef > 0:
        with torch.no_grad():
            ref_logprobs, _ = token_logprobs(reference, rows)
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1.0
        kl_loss = (kl * weights).sum()
        loss = loss + config.kl_coef * kl_loss
        values["kl"] = float(kl_loss.detach())
    return loss, values


@torch.no_grad()
def recompute_logprobs(model: Any, batch: PolicyBatch) -> list[list[float]]:
    """The trained model's own logprobs of each trajectory's tokens (old_logprobs: recompute)."""
    model.eval()
    out = []
    device = next(model.parameters()).device
    try:
        for example in batch.examples:
            ids = torch.tensor([example.token_ids], device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            out.append([0.0, *lp.tolist()])
    finally:
        model.train()
    return out


def _share(run: TrainingRun, groups: list[Group]) -> list[Group]:
    """Process 0's groups on every process (as bytes: generated protobuf classes do not pickle)."""
    if not run.ctx.enabled:
        return groups
    wire = run.ctx.broadcast([[t.SerializeToString() for t in group] for group in groups])
    return [[pb.Trajectory.FromString(blob) for blob in group] for group in wire]


def _blended_sft(model: Any, rows: Rows, *, total: float, weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    loss, values = sft_loss(model, rows, total)
    return weight * loss, {"sft_nll_sum": values["nll_sum"], "sft_targets": values["targets"]}


@dataclass(frozen=True)
class GRPOResult:
    model_dir: Path
    steps: int
    policy_version: int
    last_metrics: dict[str, float]


def run_grpo(
    config: GRPOConfig,
    *,
    source: RolloutSource | None = None,
    sync: WeightSync | None = None,
    run_id: str = "grpo",
    resume: bool = False,
    stop_at: int | None = None,
    on_step: OnStep | None = None,
) -> GRPOResult:
    """Train until `config.steps` (or `stop_at`). `source` and `sync` default to what the config names."""
    if config.model.path is None:
        raise TrainingError("GRPO starts from a trained policy: set model.path (e.g. an SFT run's model)")
    run = TrainingRun(config, run_id=run_id, examples=lambda tok: [], resume=resume)
    try:
        sft_examples: list[Example] = []
        if config.loss.sft_weight > 0:
            train_tasks, _ = load_tasks(config.data)
            sft_examples, dropped = usable(
                agent_examples_for(config.data)(run.tokenizer, train_tasks), config.data.max_length
            )
            if not sft_examples:
                raise EmptyDatasetError(
                    f"loss.sft_weight > 0 but no usable reference dialogue for the SFT blend (dropped {dropped})"
                )
        sft_cursor = Cursor(max(len(sft_examples), 1), config.seed, **run.state.cursor.get("sft", {}))
        reference = run.reference_model() if config.loss.kl_coef > 0 else None
        if run.ctx.is_main:
            if source is None:
                source, source_sync = open_source(
                    config,
                    run.state.cursor.get("rollouts", {}),
                    model=run.model,
                    policy_version=run.state.policy_version,
                )
                sync = sync or source_sync
            sync = sync if sync is not None else open_sync(config)
        last = min(config.steps, stop_at or config.steps)
        values: dict[str, float] = {}
        while run.state.step < last:
            timer = Timer()
            started = time.perf_counter()
            version = run.state.policy_version
            with timer("rollout_wait"):
                mine = draw_groups(source, config, version) if source is not None else []
                groups = _share(run, mine)
            kept, dropped = filter_groups(
                groups, config.filter, policy_version=version, max_length=config.data.max_length
            )
            parts = []
            with timer("train"):
                if kept:
                    batch = policy_batch(kept, advantages(kept, config.reward, config.advantage), config.loss)
                    old = batch.old_logprobs
                    if config.loss.old_logprobs == "recompute":
                        old = recompute_logprobs(run.model, batch)
                    rows = lay_out_batch(
                        run, batch.examples, weights=batch.weights, old_logprobs=old, advantages=batch.advantages
                    )
                    parts.append((rows, functools.partial(grpo_loss, config=config.loss, reference=reference)))
                if sft_examples:
                    sft_batch = [sft_examples[i] for i in sft_cursor.take(config.loss.sft_batch_size)]
                    total = float(sum(sum(e.mask) for e in sft_batch))
                    blend = functools.partial(_blended_sft, total=total, weight=config.loss.sft_weight)
                    parts.append((lay_out_batch(run, sft_batch), blend))
                result = run.step(parts) if parts else None
            new_policy = result is not None
            with timer("sync"):
                if new_policy and run.ctx.is_main and sync is not None:
                    sync.push(run.model, version + 1)
            values = _step_metrics(groups, kept, dropped, result, timer, started, version)
            cursor = {"sft": sft_cursor.state(), "rollouts": source.cursor() if source is not None else {}}
            run.advance(run.ctx.broadcast(cursor), values, new_policy=new_policy)
            step = run.state.step
            if run.ctx.is_main and step % config.metrics.log_every == 0:
                stale = [staleness(t, version) for g in kept for t in g]
                run.metrics.log(step, values, filtered=dropped, staleness=stale)
            run.maybe_save(force=step == last)
            if on_step is not None and run.ctx.is_main:
                on_step(step, config.steps, values)
        model_dir = run.save_final() if run.state.step >= config.steps else run.last_checkpoint or config.run_dir
        return GRPOResult(model_dir, run.state.step, run.state.policy_version, values)
    finally:
        if source is not None:
            source.close()
        if sync is not None:
            sync.close()
        run.close()


def _step_metrics(
    groups: Sequence[Group],
    kept: Sequence[Group],
    dropped: Counter[str],
    result: StepResult | None,
    timer: Timer,
    started: float,
    version: int,
) -> dict[str, float]:
    trained = [t for g in kept for t in g]
    scored = [t for g in groups for t in g if t.status in (pb.EPISODE_STATUS_COMPLETED, pb.EPISODE_STATUS_TRUNCATED)]
    rewards = [t.reward.value for t in scored]
    values: dict[str, float] = {
        "reward_mean": statistics.fmean(rewards) if rewards else math.nan,
        "reward_std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0,
        "pass_rate": sum(r >= 1.0 for r in rewards) / len(rewards) if rewards else math.nan,
        "episodes": float(sum(len(g) for g in groups)),
        "groups_drawn": float(len(groups)),
        "episodes_trained": float(len(trained)),
        "groups_trained": float(len(kept)),
        "policy_version": float(version),
        "rollout_wait_s": timer.seconds.get("rollout_wait", 0.0),
        "train_s": timer.seconds.get("train", 0.0),
        "sync_s": timer.seconds.get("sync", 0.0),
        "step_s": time.perf_counter() - started,
    }
    if trained:
        stale = [staleness(t, version) for t in trained]
        values["staleness_mean"] = statistics.fmean(stale)
        values["staleness_max"] = float(max(stale))
    if result is not None:
        m = result.metrics
        tokens = max(m.get("policy_tokens", 0.0), 1.0)
        values.update(
            {
                "policy_loss": m.get("policy_loss", 0.0),
                "clip_fraction": m.get("clipped_tokens", 0.0) / tokens,
                "entropy": m.get("entropy_sum", 0.0) / tokens,
                "ratio_mean": m.get("ratio_sum", 0.0) / tokens,
                "grad_norm": result.grad_norm,
                "policy_tokens": m.get("policy_tokens", 0.0),
                "tokens_per_s": m.get("policy_tokens", 0.0) / max(timer.seconds.get("train", 0.0), 1e-9),
            }
        )
        if "kl" in m:
            values["kl"] = m["kl"]
        if m.get("sft_targets"):
            values["sft_loss"] = m["sft_nll_sum"] / m["sft_targets"]
    return values
