"""The quickstart pipeline: synthesize → tokenizer + models → SFT → user-model SFT → GRPO → evaluate → report.

Each stage writes under `<out>/<stage>/` and is recorded in `<out>/stages.json` when it finishes (stages.py),
so `--resume` continues after the last finished stage; a stage that was interrupted starts over from an empty
folder. Stages that need services start them on loopback and stop them when they end, whatever happens.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eigenloop.data import read_tasks, write_json_atomic
from eigenloop.quickstart import services
from eigenloop.quickstart.config import QuickstartConfig, agent_prompt
from eigenloop.quickstart.stages import Stage, Summary

STAGE_NAMES = ("synth", "model", "sft", "user_sft", "grpo", "eval", "report")
# (what, done, total, detail): a stage reports its progress; the CLI draws it.
Progress = Callable[[str, int, int, str], None]


@dataclass(frozen=True)
class Paths:
    out: Path

    @property
    def train_tasks(self) -> Path:
        return self.out / "synth" / "accepted.jsonl"

    @property
    def heldout_tasks(self) -> Path:
        return self.out / "synth" / "heldout.jsonl"

    @property
    def init_model(self) -> Path:
        return self.out / "model" / "agent"

    @property
    def sft_model(self) -> Path:
        return self.out / "sft" / "model"

    @property
    def user_model(self) -> Path:
        return self.out / "user_sft" / "model"

    @property
    def grpo_model(self) -> Path:
        return self.out / "grpo" / "model"


def _fresh(folder: Path) -> Path:
    """An empty stage folder: a rerun never builds on what an interrupted attempt left."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _metrics_line(values: dict[str, float], keys: tuple[str, ...]) -> str:
    return "  ".join(f"{k} {values[k]:.3g}" for k in keys if k in values)


def build_stages(config: QuickstartConfig, out: Path, progress: Progress) -> list[Stage]:
    paths = Paths(out)

    def synth(folder: Path) -> Summary:
        from eigenloop.quickstart.synth import synthesize

        _fresh(folder)
        return synthesize(
            config, folder, lambda r, done, total: progress("synth", done, total, f"round {r}/{config.synth.rounds}")
        )

    def model(folder: Path) -> Summary:
        from eigenloop.quickstart.model import build_model_and_tokenizer

        _fresh(folder)
        return build_model_and_tokenizer(
            read_tasks(paths.train_tasks), config.model, folder, config.seed, agent_prompt(config)
        )

    def sft(folder: Path, *, user: bool) -> Summary:
        from eigenloop.quickstart.train import train_sft

        _fresh(folder)
        name = "user_sft" if user else "sft"
        return train_sft(
            config,
            user=user,
            on_step=lambda s, n, v: progress(name, s, n, _metrics_line(v, ("train_loss", "eval_loss"))),
            # The user model starts from the agent's SFT model, the stand-in for a pretrained base: from random
            # weights it did not learn to copy ids from its scenario in the same budget (seed 2: held-out user
            # loss 0.54 from scratch, 0.12 from the agent; the agent then passed 0 % and 58 % of held-out tasks).
            model=paths.sft_model if user else paths.init_model,
            tasks=paths.train_tasks,
            heldout=paths.heldout_tasks,
            out=folder,
        )

    def grpo(folder: Path) -> Summary:
        from eigenloop.quickstart.train import inference_settings, train_grpo, user_sim_settings

        _fresh(folder)
        g = config.grpo
        wanted = {
            "toolenv": {},
            "user_sim": user_sim_settings(config, paths.user_model, g.user),
            "inference": inference_settings(paths.sft_model, g.tasks_per_step * g.group_size),
        }
        with services.running(folder / "services", wanted) as addresses:
            return train_grpo(
                config,
                addresses,
                sft_model=paths.sft_model,
                tasks=paths.train_tasks,
                out=folder,
                on_step=lambda s, n, v: progress("grpo", s, n, _metrics_line(v, ("reward_mean", "pass_rate"))),
            )

    def evaluate(folder: Path) -> Summary:
        _fresh(folder)
        models = {"sft": paths.sft_model, "grpo": paths.grpo_model}
        return evaluate_models(
            config, models, folder, progress, heldout=paths.heldout_tasks, user_model=paths.user_model
        )

    def report(folder: Path) -> Summary:
        from eigenloop.quickstart.report import write_quickstart_report

        _fresh(folder)
        md, html = write_quickstart_report(config, out)
        return {"report": str(md), "html": str(html)}

    stages = [
        Stage("synth", "synthesize and validate tasks", synth),
        Stage("model", "train the tokenizer, build the models", model),
        Stage("sft", "agent SFT", lambda f: sft(f, user=False)),
        Stage("user_sft", "user-model SFT", lambda f: sft(f, user=True)),
        Stage("grpo", "GRPO against the user model", grpo),
        Stage("eval", "evaluate SFT and GRPO on held-out tasks", evaluate),
        Stage("report", "write the report", report),
    ]
    assert tuple(s.name for s in stages) == STAGE_NAMES
    return stages


def evaluate_models(
    config: QuickstartConfig,
    models: dict[str, Path],
    folder: Path,
    progress: Progress,
    *,
    heldout: Path,
    user_model: Path,
) -> dict[str, Any]:
    """Each named model on the `heldout` tasks: `folder/<name>/` for its trajectories, `folder/results.json`.

    One set of services: inference starts with the first model and is given each next one as a weight update,
    exactly as GRPO updates it during training. The simulated user is `user_model` (the fine-tuned one).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eigenloop.quickstart.evaluate import evaluate as run_eval
    from eigenloop.quickstart.train import inference_settings, user_sim_settings
    from eigenloop.training.config import SyncConfig
    from eigenloop.training.sync import InferenceSync

    tasks = read_tasks(heldout)
    names = list(models)
    tokenizer = AutoTokenizer.from_pretrained(str(models[names[0]]))
    total = len(models) * len(tasks) * (1 + config.eval.samples)
    done = [0]

    def on_episode(n: int) -> None:
        done[0] += n
        progress("eval", done[0], total, "")

    wanted = {
        "toolenv": {},
        "user_sim": user_sim_settings(config, user_model),
        "inference": inference_settings(models[names[0]], len(tasks) * config.eval.samples),
    }
    results: dict[str, Any] = {}
    with services.running(folder / "services", wanted) as addresses:
        for version, name in enumerate(names):
            if version:
                sync = InferenceSync(SyncConfig(inference=[addresses["inference"]]))
                try:
                    sync.push(AutoModelForCausalLM.from_pretrained(str(models[name])), version=version)
                finally:
                    sync.close()
            results[name] = run_eval(config, addresses, tokenizer, tasks, folder / name, on_episode).as_percent()
    write_json_atomic(folder / "results.json", results)
    return results
