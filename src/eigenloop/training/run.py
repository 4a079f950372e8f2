"""What every training stage shares: the model, the optimizer and its schedule, gradient steps over rows split
between processes, checkpoints (save and exact resume) and metrics.

A stage (sft.py, grpo.py) decides what each step's rows and loss are; `TrainingRun.step` does the rest, in the
order of a nanoGPT loop: forward/backward per micro-batch, all-reduce (DDP), clip, check finite, optimizer step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as transformers_logging

from eigenloop.models import build_model, save_model, train_tokenizer
from eigenloop.training import checkpoint, distributed
from eigenloop.training.config import ModelConfig, TrainConfig
from eigenloop.training.data import Example, Rows, example_texts
from eigenloop.training.metrics import Metrics

StepLoss = Callable[[Any, Rows], tuple[torch.Tensor, dict[str, float]]]
"""(model, micro-batch rows) -> (loss to backpropagate, metric sums); the loss is already globally normalised."""


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and what was kept."""


class NonFiniteLossError(TrainingError):
    pass


def load_pretrained(spec: ModelConfig) -> tuple[Any, Any]:
    """Tokenizer and causal LM from a local folder or a hub id (the ordinary transformers path)."""
    assert spec.path is not None
    looks_local = spec.path.startswith((".", "/", "~")) or Path(spec.path).exists()
    if looks_local and not Path(spec.path).expanduser().is_dir():
        raise TrainingError(f"model.path {spec.path!r}: no such directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.path)
        model = AutoModelForCausalLM.from_pretrained(spec.path)
    except (OSError, ValueError) as err:
        raise TrainingError(f"cannot load a tokenizer and causal LM from model.path {spec.path!r}: {err}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def init_pretrained(spec: ModelConfig, examples: Callable[[Any], list[Example]], seed: int) -> tuple[Any, Any]:
    """A new tokenizer trained on the stage's own dialogues, and a model of the preset's size.

    The dialogues are rendered once with a bytes-only tokenizer (rendering needs only the chat template) to get
    the text the real tokenizer is trained on.
    """
    assert spec.init is not None
    bootstrap = train_tokenizer([], vocab_size=259)
    tokenizer = train_tokenizer(example_texts(bootstrap, examples(bootstrap)), spec.init.vocab_size)
    model = build_model(
        spec.init.preset, tokenizer, max_position_embeddings=spec.init.max_position_embeddings, seed=seed
    )
    return tokenizer, model


def lr_lambda(steps: int, warmup_fraction: float, min_fraction: float) -> Callable[[int], float]:
    """Linear warmup, then cosine from 1 to `min_fraction` over the remaining steps."""
    warmup = int(warmup_fraction * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, steps - warmup)
        return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def token_logprobs(model: Any, rows: Rows, *, entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(token t | tokens before t, same sequence) for t >= 1, shape (rows, width - 1); optionally the entropy
    of each of those predictive distributions."""
    # No KV cache: transformers keeps packed sequences apart (from the position ids) only when there is none.
    logits = model(input_ids=rows.input_ids, position_ids=rows.position_ids, use_cache=False).logits[:, :-1].float()
    targets = rows.input_ids[:, 1:]
    logprobs = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    if not entropy:
        return logprobs, None
    log_p = torch.log_softmax(logits, dim=-1)
    return logprobs, -(log_p.exp() * log_p).sum(-1)


def target_weights(rows: Rows) -> torch.Tensor:
    """Weights aligned with `token_logprobs`: a sequence's first token is never a target (no context to predict
    it from, and in a packed row the token before it belongs to another sequence)."""
    return rows.weights[:, 1:] * (rows.position_ids[:, 1:] > 0)


@dataclass
class StepResult:
    metrics: dict[str, float]
    grad_norm: float


class TrainingRun:
    """Model, optimizer, schedule, process group, checkpoints and metrics of one run."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        run_id: str,
        examples: Callable[[Any], list[Example]],
        resume: bool,
    ) -> None:
        self.config = config
        self.ctx = distributed.init(config.model.device)
        # Per-file save/load progress bars would drown the run's own progress.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if config.threads:
            torch.set_num_threads(config.threads)
        self.checkpoints_dir = config.run_dir / "checkpoints"
        self.resumed_from = checkpoint.latest(self.checkpoints_dir) if resume else None
        if resume and self.resumed_from is None:
            raise TrainingError(f"--resume: no checkpoint under {self.checkpoints_dir}")
        torch.manual_seed(config.seed)
        if self.resumed_from is not None:
            self.tokenizer, model = load_pretrained(ModelConfig(path=str(self.resumed_from), init=None))
        elif config.model.path is not None:
            self.tokenizer, model = load_pretrained(config.model)
        else:
            self.tokenizer, model = init_pretrained(config.model, examples, config.seed)
        self.model = model.to(self.ctx.device)
        self.model.train()
        self.trained = self.ctx.wrap(self.model)
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(config.steps, optim.warmup_fraction, optim.min_lr_fraction)
        )
        self.state = checkpoint.TrainerState(step=0, policy_version=0, cursor={}, metrics={})
        if self.resumed_from is not None:
            self.state = checkpoint.load_training_state(self.resumed_from, self.optimizer, self.scheduler)
        self.metrics = Metrics(
            config.run_dir / "metrics.jsonl" if self.ctx.is_main else None,
            run_id,
            port=config.metrics.prometheus_port if self.ctx.is_main else None,
            resumed_at=self.state.step if self.resumed_from is not None else None,
        )
        self.last_checkpoint: Path | None = self.resumed_from

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def reference_model(self) -> Any:
        """The KL reference, frozen: the initial policy (model.path, also after a resume), else a copy of the
        current weights."""
        if self.config.model.path is not None:
            ref = load_pretrained(self.config.model)[1].to(self.ctx.device).eval()
        else:
            ref = copy.deepcopy(self.model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    def my_rows(self, rows: Rows) -> Rows:
        """This process's rows (the caller laid out `min_rows` so every process gets as many), on its device."""
        if self.ctx.enabled:
            rows = rows.select(list(self.ctx.shard(len(rows))))
        return rows.to(self.ctx.device)

    def step(self, parts: Sequence[tuple[Rows, StepLoss]]) -> StepResult:
        """One optimizer step over this process's rows of each (rows, loss) part, `micro_batch_rows` at a time;
        the part's losses are summed (e.g. the GRPO loss and the blended SFT loss)."""
        micro = self.config.micro_batch_rows
        chunks = [(rows.slice(s, s + micro), fn) for rows, fn in parts for s in range(0, len(rows), micro)]
        sums: dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for i, (chunk, loss_fn) in enumerate(chunks):
            # Gradients are all-reduced once, on the last backward (every process runs as many chunks).
            last = i == len(chunks) - 1
            sync = self.trained.no_sync() if self.ctx.enabled and not last else contextlib.nullcontext()
            with sync:
                loss, values = loss_fn(self.trained, chunk)
                # Losses are normalised by global counts; DDP averages gradients over processes, so scale back up.
                (loss * self.ctx.world_size).backward()  # type: ignore[no-untyped-call]
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
        totals = {k: self.ctx.all_sum(v) for k, v in sorted(sums.items())}
        clip = self.config.optim.grad_clip or math.inf  # inf: measure the norm, clip nothing
        norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not math.isfinite(norm) or any(not math.isfinite(v) for v in totals.values()):
            self.optimizer.zero_grad(set_to_none=True)
            kept = self.last_checkpoint or "none yet (nothing was saved before this step)"
            raise NonFiniteLossError(
                f"non-finite loss or gradient at step {self.state.step + 1} ({_show(totals)}, grad norm {norm}): "
                f"the step was not applied; last good checkpoint: {kept}"
            )
        self.optimizer.step()
        self.scheduler.step()
        return StepResult(totals, norm)

    def advance(self, cursor: dict[str, Any], metrics: dict[str, float], *, new_policy: bool) -> None:
        self.state = checkpoint.TrainerState(
            step=self.state.step + 1,
            policy_version=self.state.policy_version + (1 if new_policy else 0),
            cursor=cursor,
            metrics=metrics,
        )

    def maybe_save(self, *, force: bool = False) -> Path | None:
        step = self.state.step
        if not force and step % self.config.checkpoint.every:
            return None
        if self.ctx.is_main:
            self.last_checkpoint = checkpoint.save(
                self.checkpoints_dir,
                self.state,
                model=self.model,
                tokenizer=self.tokenizer,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                keep_last=self.config.checkpoint.keep_last,
            )
        self.ctx.barrier()
        return self.last_checkpoint

    def save_final(self) -> Path:
        """The trained model in the transformers layout at run_dir/model (what inference and user_sim load)."""
        out = self.config.run_dir / "model"
        if self.ctx.is_main:
            save_model(out, self.tokenizer, self.model)
        self.ctx.barrier()
        return out

    def close(self) -> None:
        self.metrics.close()
        distributed.shutdown(self.ctx)


def _show(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in values.items())


class Timer:
    """Wall time of named phases within a step (rollout wait, train, sync)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = 0.0
        self._name = ""

    def __call__(self, name: str) -> Timer:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._name] = self.seconds.get(self._name, 0.0) + time.perf_counter() - self._start
