"""Training configs: one pydantic model per stage, read from YAML, unknown keys and wrong types rejected by name.

Every part of the GRPO recipe is a field, so an ablation is one line of YAML (e.g. `filter.zero_variance: false`).
Defaults follow ../shared/DESIGN.md ("Training") and ../shared/notes/learnability.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eigenloop.training.curriculum import TaskSampling
from eigenloop.usersim.policies import UserPrompt

Stage = Literal["sft", "user-sft", "grpo"]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and every bad key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelInit(Section):
    """Build a model from scratch: train a tokenizer on the training dialogues and size a Qwen2 by preset."""

    preset: str = Field(default="small", description="tiny | xs | small | medium (eigenloop.models.PRESETS)")
    vocab_size: int = Field(default=600, ge=259, description="upper bound on the BPE vocabulary")
    max_position_embeddings: int = Field(default=2048, ge=16)


class ModelConfig(Section):
    path: str | None = Field(default=None, description="a saved model directory (tokenizer + causal LM) or a hub id")
    init: ModelInit | None = Field(default=None, description="or: build a new model from scratch")
    device: str = "cpu"

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.path is None) == (self.init is None):
            raise ValueError("set exactly one of model.path (an existing model) and model.init (build one)")
        return self


class DataConfig(Section):
    tasks: list[Path] = Field(default_factory=list, description="task JSONL files (e.g. accepted.jsonl)")
    domains: list[str] = Field(default_factory=list, description="domains whose built-in sample tasks to add")
    eval_tasks: list[Path] = Field(default_factory=list, description="held-out task files for the eval loss")
    eval_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="without eval_tasks: this share of tasks (chosen by id hash) is held out"
    )
    max_length: int = Field(default=1024, ge=16, description="longer dialogues are dropped (counted), never cut")
    # The agent's prompt, as rollouts build it (rollout.episode.EpisodeConfig): SFT must see the same tokens.
    system_prompt: str | None = Field(default=None, description="the agent's system prompt; unset: the domain's policy")
    tools_in_prompt: bool = Field(default=True, description="list the domain's tool schemas in the system turn")
    # The user model's prompt, as the user_sim that will serve it writes it (its llm_prompt setting).
    user_prompt: UserPrompt = Field(default="full", description="user-model SFT: 'full' or 'compact' system prompt")


class OptimConfig(Section):
    lr: float = Field(default=2e-3, gt=0)
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1)
    min_lr_fraction: float = Field(default=0.1, ge=0, le=1, description="cosine decays to lr x this")
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(default=1.0, ge=0, description="max gradient norm; 0 disables clipping")


class CheckpointConfig(Section):
    every: int = Field(default=50, ge=1, description="steps between checkpoints (the last step is always saved)")
    keep_last: int = Field(default=3, ge=1)


class MetricsConfig(Section):
    prometheus_port: int | None = Field(default=None, ge=0, le=65535, description="serve /metrics here; unset: off")
    log_every: int = Field(default=1, ge=1)


class TrainConfig(Section):
    """What every stage shares."""

    run_dir: Path = Field(description="checkpoints (checkpoints/step-N), metrics.jsonl and the final model")
    seed: int = 0
    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=32, ge=1, description="dialogues per optimizer step (over all processes)")
    packing: bool = Field(default=True, description="pack dialogues into rows of data.max_length instead of padding")
    micro_batch_rows: int = Field(default=64, ge=1, description="rows per forward pass (gradient accumulation beyond)")
    threads: int = Field(default=0, ge=0, description="torch CPU threads; 0 leaves torch's default")
    model: ModelConfig
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    metrics: MetricsConfig = MetricsConfig()


class SFTConfig(TrainConfig):
    eval_every: int = Field(default=50, ge=1, description="steps between held-out eval losses (and at the end)")


class RewardConfig(Section):
    scale: float = 10.0
    bias: float = -0.5


class AdvantageConfig(Section):
    group_baseline: bool = Field(default=True, description="subtract the group's mean reward (off: raw scaled reward)")
    group_std_norm: bool = Field(default=False, description="divide by the group's std (Dr. GRPO argues against it)")
    batch_std_norm: bool = Field(default=True, description="divide by the std of all advantages in the batch")
    eps: float = Field(default=1e-6, gt=0)


class FilterConfig(Section):
    zero_variance: bool = Field(default=True, description="drop groups whose rewards are all equal (no signal)")
    infra_failed: bool = Field(default=True, description="drop INFRA_FAILED episodes (never scored)")
    simulator_invalid: bool = Field(
        default=True, description="drop SIMULATOR_INVALID episodes (the user broke its rules)"
    )
    max_staleness: int | None = Field(
        default=4, ge=0, description="drop samples generated more than this many policy versions ago; unset: keep all"
    )
    refill: bool = Field(
        default=False,
        description="draw more groups until rollouts.tasks_per_step of them survive the filters (DAPO's dynamic "
        "sampling); off: train on the survivors of tasks_per_step groups, however few",
    )
    max_draw_factor: int = Field(
        default=4, ge=1, description="with refill, at most this many times tasks_per_step groups drawn per step"
    )


class LossConfig(Section):
    clip_eps: float = Field(default=0.4, ge=0, description="ratio clipped to [1 - eps, 1 + eps_high]")
    clip_eps_high: float | None = Field(default=None, ge=0, description="upper clip; unset: clip_eps")
    aggregation: Literal["token", "sequence"] = Field(
        default="token",
        description="token: mean over all policy tokens of the batch; sequence: mean of per-sequence means",
    )
    kl_coef: float = Field(
        default=0.0, ge=0, description="weight of the k3 KL to the initial policy; 0 keeps no reference"
    )
    sft_weight: float = Field(default=0.0, ge=0, description="weight of the SFT loss on reference dialogues")
    sft_batch_size: int = Field(default=8, ge=1, description="reference dialogues per step for the SFT blend")
    old_logprobs: Literal["trace", "recompute"] = Field(
        default="trace",
        description="trace: the sampler's logprobs (importance ratio covers staleness); recompute: the trainer's own",
    )


class RolloutConfig(Section):
    source: Literal["file", "manager"] = Field(
        default="manager", description="file: replay trajectories from `path`; manager: live rollouts"
    )
    path: Path | None = Field(default=None, description="trajectory JSONL (source: file), grouped by group_id")
    inference: str | None = Field(
        default=None, description="inference replicas the manager samples from; unset: an engine in this process"
    )
    toolenv: str | None = Field(default=None, description="toolenv replicas; unset: environments in this process")
    user_sim: str | None = Field(default=None, description="user_sim replicas; unset: procedural users in this process")
    tasks_per_step: int = Field(default=16, ge=1)
    group_size: int = Field(default=8, ge=2, description="samples per task (G)")
    temperature: float = Field(default=1.0, ge=0)
    max_new_tokens: int = Field(default=256, ge=1)
    max_turns: int = Field(default=8, ge=1)
    max_inflight_groups: int = Field(default=32, ge=1, description="groups the manager may run ahead of the trainer")
    task_sampling: TaskSampling = Field(
        default="uniform",
        description="uniform: every task once per pass; pass_rate: task families weighted by how often their recent "
        "groups had mixed rewards (eigenloop.training.curriculum)",
    )

    @model_validator(mode="after")
    def _file_needs_path(self) -> RolloutConfig:
        if self.source == "file" and self.path is None:
            raise ValueError("rollouts.source 'file' needs rollouts.path (a trajectory JSONL)")
        return self


class SyncConfig(Section):
    inference: list[str] = Field(
        default_factory=list, description="every inference replica (host:port), each updated after every step"
    )
    chunk_bytes: int = Field(default=1 << 20, ge=1024)
    timeout_s: float = Field(default=120.0, gt=0)


class GRPOConfig(TrainConfig):
    optim: OptimConfig = OptimConfig(lr=1e-4, warmup_fraction=0.0, min_lr_fraction=1.0)
    steps: int = Field(default=100, ge=1)
    reward: RewardConfig = RewardConfig()
    advantage: AdvantageConfig = AdvantageConfig()
    filter: FilterConfig = FilterConfig()
    loss: LossConfig = LossConfig()
    rollouts: RolloutConfig = RolloutConfig()
    sync: SyncConfig = SyncConfig()


STAGES: dict[str, type[TrainConfig]] = {"sft": SFTConfig, "user-sft": SFTConfig, "grpo": GRPOConfig}
C = TypeVar("C", bound=TrainConfig)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key")
        elif item["type"] == "missing":
            lines.append(f"  {where}: required")
        else:
            got = item.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            lines.append(f"  {where}: {item['msg']}{shown}")
    return "\n".join(lines)


def parse_config(cls: type[C], raw: Any, *, source: str = "config") -> C:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid {cls.__name__}:\n{_describe(err)}") from None


def load_config(stage: Stage, path: Path) -> TrainConfig:
    """The stage's config from a YAML file; relative paths inside it are relative to the file."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(STAGES[stage], _resolve_paths(raw, path.parent), source=str(path))


def _resolve_paths(raw: Any, base: Path) -> Any:
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    if isinstance(out.get("run_dir"), str):
        out["run_dir"] = str(base / out["run_dir"])
    data = out.get("data")
    if isinstance(data, dict):
        data = dict(data)
        for key in ("tasks", "eval_tasks"):
            if isinstance(data.get(key), list):
                data[key] = [str(base / p) if isinstance(p, str) else p for p in data[key]]
        out["data"] = data
    rollouts = out.get("rollouts")
    if isinstance(rollouts, dict) and isinstance(rollouts.get("path"), str):
        out["rollouts"] = {**rollouts, "path": str(base / rollouts["path"])}
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("path"), str) and model["path"].startswith((".", "/")):
        out["model"] = {**model, "path": str(base / model["path"])}
    return out
