"""Supervised fine-tuning on reference dialogues: cross-entropy on the target turns only, packed rows.

Agent SFT (`eigenloop train sft`) targets the agent's turns; user-model SFT (user_sft.py) runs the same loop on
the dialogues as the simulated user sees them. Each step takes `batch_size` dialogues from a seeded, reshuffled
walk over the training set, so a step is the same work with or without packing; packing only removes padding.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eigenloop.training.config import SFTConfig
from eigenloop.training.data import (
    Cursor,
    EmptyDatasetError,
    Example,
    Rows,
    agent_examples_for,
    layout,
    load_tasks,
    usable,
)
from eigenloop.training.run import TrainingRun, target_weights, token_logprobs

ExampleBuilder = Callable[[Any, Sequence[Any]], list[Example]]
OnStep = Callable[[int, int, dict[str, float]], None]


def sft_loss(model: Any, rows: Rows, total_targets: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Summed negative log-likelihood of the weighted tokens over `total_targets` (all processes' target count,
    so averaged DDP gradients equal the single-process mean)."""
    logprobs, _ = token_logprobs(model, rows)
    weights = target_weights(rows)
    nll = -(logprobs * weights).sum()
    return nll / total_targets, {"nll_sum": float(nll.detach()), "targets": float(weights.sum())}


def lay_out_batch(run: TrainingRun, batch: Sequence[Example], **kw: Any) -> Rows:
    """This process's rows of `batch` (every process gets as many)."""
    config = run.config
    rows = layout(
        batch,
        max_length=config.data.max_length,
        packing=config.packing,
        pad_id=run.pad_id,
        row_multiple=run.ctx.world_size,
        **kw,
    )
    return run.my_rows(rows)


@torch.no_grad()
def eval_loss(run: TrainingRun, examples: Sequence[Example]) -> float:
    """Mean target-token NLL over `examples` (held-out dialogues), split between processes."""
    if not examples:
        return math.nan
    run.model.eval()
    try:
        size = run.config.micro_batch_rows
        nll = targets = 0.0
        for start in range(0, len(examples), size):
            batch = examples[start : start + size]
            rows = lay_out_batch(run, batch)
            if len(rows):
                _, parts = sft_loss(run.model, rows, 1.0)
                nll += parts["nll_sum"]
                targets += parts["targets"]
        return run.ctx.all_sum(nll) / max(run.ctx.all_sum(targets), 1.0)
    finally:
        run.model.train()


@dataclass(frozen=True)
class SFTResult:
    model_dir: Path
    steps: int
    train_loss: float
    eval_loss: float
    examples: int
    dropped: dict[str, int]


def run_sft(
    config: SFTConfig,
    *,
    examples: ExampleBuilder | None = None,
    run_id: str = "sft",
    resume: bool = False,
    stop_at: int | None = None,
    on_step: OnStep | None = None,
) -> SFTResult:
    """Train until `config.steps` (or `stop_at`, to interrupt a run on purpose), checkpointing on the way.
    `examples` turns tasks into training sequences; default: the agent's view (`agent_examples_for`)."""
    examples = examples or agent_examples_for(config.data)
    train_tasks, held_tasks = load_tasks(config.data)
    run = TrainingRun(config, run_id=run_id, examples=lambda tok: examples(tok, train_tasks), resume=resume)
    try:
        train, dropped = usable(examples(run.tokenizer, train_tasks), config.data.max_length)
        held, _ = usable(examples(run.tokenizer, held_tasks), config.data.max_length)
        if not train:
            raise EmptyDatasetError(
                f"no usable training dialogue: {len(train_tasks)} task(s) from {_sources(config)}, "
                f"dropped {dropped} (max_length {config.data.max_length})"
            )
        cursor = Cursor(len(train), config.seed, **run.state.cursor)
        last = min(config.steps, stop_at or config.steps)
        train_loss = eval_nll = math.nan
        while run.state.step < last:
            started = time.perf_counter()
            batch = [train[i] for i in cursor.take(config.batch_size)]
            total = float(sum(sum(e.mask) for e in batch))
            lr = float(run.scheduler.get_last_lr()[0])  # the rate this step uses
            rows = lay_out_batch(run, batch)
            result = run.step([(rows, functools.partial(sft_loss, total_targets=total))])
            elapsed = time.perf_counter() - started
            train_loss = result.metrics["nll_sum"] / max(result.metrics["targets"], 1.0)
            run.advance(cursor.state(), {"train_loss": train_loss}, new_policy=True)
            values: dict[str, float] = {
                "train_loss": train_loss,
                "grad_norm": result.grad_norm,
                "lr": lr,
                "tokens_per_s": run.ctx.all_sum(float((rows.sequence >= 0).sum())) / max(elapsed, 1e-9),
                "target_tokens": total,
                "step_s": elapsed,
            }
            step = run.state.step
            if step % config.eval_every == 0 or step == last:
                eval_nll = eval_loss(run, held)
                values["eval_loss"] = eval_nll
            if run.ctx.is_main and step % config.metrics.log_every == 0:
                run.metrics.log(step, values)
            run.maybe_save(force=step == last)
            if on_step is not None and run.ctx.is_main:
                on_step(step, config.steps, values)
        model_dir = run.save_final() if run.state.step >= config.steps else run.last_checkpoint or config.run_dir
        return SFTResult(model_dir, run.state.step, train_loss, eval_nll, len(train), dropped)
    finally:
        run.close()


def _sources(config: SFTConfig) -> str:
    named = [str(p) for p in config.data.tasks] + [f"domain {d}" for d in config.data.domains]
    return ", ".join(named) or "nothing (set data.tasks or data.domains)"
