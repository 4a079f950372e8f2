"""`eigenloop train sft|user-sft|grpo --config FILE.yaml [--resume]`: run a training stage with a progress bar.

torch is imported only when a stage runs (it lives in the `local` extra; the rest of the CLI works without it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from eigenloop.cli.errors import fail

train_app = typer.Typer(help="Train: agent SFT, user-model SFT, GRPO.", no_args_is_help=True)
console = Console()

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="the stage's YAML config")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="continue from the run's latest checkpoint")]

_SHOWN = ("train_loss", "eval_loss", "reward_mean", "pass_rate", "policy_loss", "clip_fraction", "tokens_per_s")


def _run(stage: str, config_path: Path, resume: bool) -> None:
    try:
        from eigenloop.training.config import ConfigError, load_config
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        raise fail(f"training needs the local extra (pip install 'eigenloop[local]'): {err}") from None
    from eigenloop.data import DataFormatError
    from eigenloop.training.data import EmptyDatasetError
    from eigenloop.training.grpo import run_grpo
    from eigenloop.training.run import TrainingError
    from eigenloop.training.sft import run_sft
    from eigenloop.training.user_sft import run_user_sft

    try:
        config: Any = load_config(stage, config_path)  # type: ignore[arg-type]
    except ConfigError as err:
        console.print(f"[red]invalid config:[/red] {err}")
        raise typer.Exit(code=2) from None
    columns = (
        TextColumn(f"[bold]{stage}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(stage, total=config.steps, metrics="")

        def on_step(step: int, total: int, values: dict[str, float]) -> None:
            shown = "  ".join(f"{k} {values[k]:.4g}" for k in _SHOWN if k in values)
            progress.update(bar, completed=step, metrics=shown)

        try:
            if stage == "grpo":
                result: Any = run_grpo(config, resume=resume, on_step=on_step)
            elif stage == "user-sft":
                result = run_user_sft(config, resume=resume, on_step=on_step)
            else:
                result = run_sft(config, resume=resume, on_step=on_step)
        except (TrainingError, EmptyDatasetError, DataFormatError) as err:
            raise fail(str(err)) from None
    console.print(f"done: {result.steps} steps; model: {result.model_dir}; metrics: {config.run_dir / 'metrics.jsonl'}")


@train_app.command("sft")
def sft(config: ConfigOption, resume: ResumeOption = False) -> None:
    """Agent SFT on reference dialogues (loss on the agent's turns)."""
    _run("sft", config, resume)


@train_app.command("user-sft")
def user_sft(config: ConfigOption, resume: ResumeOption = False) -> None:
    """User-model SFT (loss on the simulated user's turns); the result is what user_sim's local backend loads."""
    _run("user-sft", config, resume)


@train_app.command("grpo")
def grpo(config: ConfigOption, resume: ResumeOption = False) -> None:
    """GRPO from a trained policy, with rollouts from the configured source."""
    _run("grpo", config, resume)
