"""The quickstart's whole configuration: one pydantic model, written to `<out>/config.yaml` before anything runs.

Two presets: the default (about 20 minutes on 2 cores) and `--fast` (a few minutes: the same stages with
smaller budgets, for tests and a first look). Budgets follow ../shared/notes/learnability.md: a ~1M-parameter
Qwen2 from scratch, digits split, SFT at lr 2e-3, GRPO at about a tenth of that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from eigenloop.training.curriculum import TaskSampling
from eigenloop.usersim.policies import UserPrompt


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthSection(_Section):
    rounds: int = Field(default=4, ge=1, description="evolution rounds (the first uses the naive initial prompts)")
    # ~1900 accepted dialogues (rounds 2-4). With ~800, the SFT model memorised ids instead of copying them: 0 %
    # on held-out tasks; with ~1900, 63 % greedy (seed 0, measured).
    per_round: int = Field(default=700, ge=1, description="candidate tasks generated per round")
    minibatch: int = Field(default=8, ge=1, description="fresh tasks each evolution candidate is scored on")
    heldout: int = Field(
        default=60, ge=0, description="held-out evaluation tasks (unseen entities, never trained on); 0: none written"
    )
    evolve: bool = True
    validate_tasks: bool = True
    diversity: bool = True


class ModelSection(_Section):
    preset: str = Field(default="small", description="eigenloop.models.PRESETS: tiny | xs | small | medium")
    vocab_size: int = Field(default=1000, ge=259)
    max_position_embeddings: int = Field(default=1024, ge=64)


class SFTSection(_Section):
    # 300 steps of 32: the calibration's budget (learnability.md, run C: greedy pass@1 0.71 on clean data).
    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=2e-3, gt=0)


class GRPOSection(_Section):
    # ~15 s per step on 2 cores (rollouts, training and the next step's rollouts share them): ~8 minutes.
    steps: int = Field(default=32, ge=1)
    tasks_per_step: int = Field(default=8, ge=1)
    group_size: int = Field(default=8, ge=2)
    lr: float = Field(default=1.5e-4, gt=0)
    zero_variance_filter: bool = True
    refill: bool = Field(
        default=False,
        description="draw more groups until tasks_per_step of them carry signal (DAPO's dynamic sampling)",
    )
    task_sampling: TaskSampling = Field(
        default="uniform", description="uniform, or pass_rate: families whose groups still differ drawn more often"
    )
    sft_weight: float = Field(default=0.0, ge=0, description="weight of the SFT loss blended into GRPO")
    user: str = Field(default="fine-tuned", pattern="^(fine-tuned|base)$", description="which user model GRPO talks to")


class EvalSection(_Section):
    samples: int = Field(default=4, ge=1, description="samples per task at temperature 1 (pass@1 sampled, pass^k)")
    max_turns: int = Field(default=6, ge=1, description="agent turns per episode")


class QuickstartConfig(_Section):
    domain: str = "toy"
    seed: int = Field(default=0, ge=0, lt=2**31)
    fast: bool = False
    threads: int = Field(default=2, ge=1, description="torch threads of the trainer process")
    policy_in_prompt: bool = Field(
        default=False,
        description="give the agent the domain policy and tool list as a system turn. Off by default: a ~1M model "
        "trained from scratch in minutes learns its tools and the policy from the dialogues, and the prompt, the "
        "same in every dialogue, was ~130 of ~350 tokens of each (measured on the toy domain)",
    )
    synth: SynthSection = SynthSection()
    model: ModelSection = ModelSection()
    sft: SFTSection = SFTSection()
    # The user model must state its ids and addresses exactly: at 150 steps it often did not (measured).
    user_sft: SFTSection = SFTSection(steps=300)
    grpo: GRPOSection = GRPOSection()
    eval: EvalSection = EvalSection()

    @classmethod
    def preset(cls, *, fast: bool, seed: int, domain: str) -> QuickstartConfig:
        if not fast:
            return cls(domain=domain, seed=seed)
        return cls(
            domain=domain,
            seed=seed,
            fast=True,
            synth=SynthSection(rounds=3, per_round=30, minibatch=4, heldout=4),
            sft=SFTSection(steps=20, batch_size=8),
            user_sft=SFTSection(steps=15, batch_size=8),
            grpo=GRPOSection(steps=2, tasks_per_step=2, group_size=4),
            eval=EvalSection(samples=4, max_turns=4),
        )


# The user model is as small as the agent: it gets its scenario only (usersim.policies.UserPrompt).
USER_PROMPT: UserPrompt = "compact"


def agent_prompt(config: QuickstartConfig) -> dict[str, Any]:
    """The agent's prompt options, the same in SFT data, GRPO rollouts and evaluation (training.data.agent_context)."""
    if config.policy_in_prompt:
        return {"system_prompt": None, "tools_in_prompt": True}
    return {"system_prompt": "", "tools_in_prompt": False}


def write_config(config: QuickstartConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def read_config(path: Path) -> QuickstartConfig:
    return QuickstartConfig.model_validate(yaml.safe_load(path.read_text()))
