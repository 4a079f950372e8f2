"""`eigenloop quickstart`: the whole loop on this machine, from task synthesis to an SFT-vs-GRPO report.

torch is imported only once the run starts (the local extra); bad input is refused before anything runs.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from eigenloop.cli.errors import fail

console = Console()

DEFAULT_OUT = Path("quickstart-out")


def _check_input(domain: str, seed: int, out: Path, resume: bool) -> None:
    from eigenloop.domains import UnknownDomainError, load_domain
    from eigenloop.quickstart.stages import finished_stages

    if not 0 <= seed < 2**31:
        raise typer.BadParameter(f"{seed} is not in [0, 2^31)", param_hint="--seed")
    try:
        found = load_domain(domain)
    except UnknownDomainError as exc:
        raise typer.BadParameter(str(exc), param_hint="--domain") from None
    if not found.samplers:
        raise typer.BadParameter(
            f"domain {domain!r} has no scenario samplers to synthesize tasks from", param_hint="--domain"
        )
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} exists and is not a folder", param_hint="--out")
    if resume:
        if not (out / "config.yaml").is_file():
            raise typer.BadParameter(f"{out} holds no quickstart run to resume (no config.yaml)", param_hint="--out")
        finished_stages(out)  # a damaged record is an error now, not after minutes of work
    elif out.exists() and any(out.iterdir()):
        raise typer.BadParameter(
            f"{out} is not empty: pass --resume to continue the run in it, or choose another --out", param_hint="--out"
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a job scheduler, a closing terminal) stops the run the way Ctrl-C does: the stage's services
    are shut down. Python's default SIGTERM action exits at once and would leave them running, orphaned."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def quickstart(
    fast: Annotated[
        bool, typer.Option("--fast", help="small budgets: a few minutes, for tests and a first look")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="seeds synthesis, initialisation, sampling")] = 0,
    out: Annotated[Path, typer.Option("--out", help="the run folder (report, data, checkpoints)")] = DEFAULT_OUT,
    domain: Annotated[str, typer.Option("--domain", help="the domain to synthesize tasks for")] = "toy",
    resume: Annotated[
        bool, typer.Option("--resume", help="continue the run in --out after its last finished stage")
    ] = False,
) -> None:
    """Synthesize tasks, train a small agent (SFT, user-model SFT, GRPO) on 2 CPU cores, evaluate, report."""
    _check_input(domain, seed, out, resume)
    from eigenloop.quickstart.config import QuickstartConfig, read_config, write_config
    from eigenloop.quickstart.pipeline import build_stages
    from eigenloop.quickstart.stages import Stage, StageError, run_stages

    config_path = out / "config.yaml"
    if resume:
        config = read_config(config_path)
        if (config.fast, config.seed, config.domain) != (fast, seed, domain):
            raise typer.BadParameter(
                f"{out} was started with --seed {config.seed} --domain {config.domain}"
                f"{' --fast' if config.fast else ''}; resume it with the same options"
            )
    else:
        config = QuickstartConfig.preset(fast=fast, seed=seed, domain=domain)
        write_config(config, config_path)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[detail]}"))  # fmt: skip
    current: list[Stage] = []
    with Progress(*columns, console=console) as progress:
        bars: dict[str, TaskID] = {}

        def on_progress(what: str, done: int, total: int, detail: str) -> None:
            if what not in bars:
                bars[what] = progress.add_task(what, total=total, detail="")
            progress.update(bars[what], completed=done, total=total, detail=detail)

        def on_start(stage: Stage, skipped: bool) -> None:
            current[:] = [stage]
            note = "[dim]done earlier, skipped[/dim]" if skipped else "..."
            progress.console.print(f"[bold]{stage.name}[/bold]: {stage.title} {note}")

        try:
            with _terminate_as_interrupt():
                run_stages(build_stages(config, out, on_progress), out, resume=resume, on_start=on_start)
        except KeyboardInterrupt:
            stage = current[0].name if current else "the first stage"
            console.print(
                f"[yellow]interrupted[/yellow] during {stage}; services stopped. Continue with: "
                f"eigenloop quickstart --resume --out {out} --seed {seed} --domain {domain}{' --fast' if fast else ''}"
            )
            raise typer.Exit(code=130) from None
        except StageError as exc:
            raise fail(str(exc)) from None
    _summary(out)


def _summary(out: Path) -> None:
    import json

    results = json.loads((out / "eval" / "results.json").read_text())
    for name in ("sft", "grpo"):
        r = results[name]
        console.print(
            f"{name:>5}: pass@1 greedy {r['greedy_pass1']:.1f}%  sampled {r['sampled_pass1']:.1f}%  "
            f"pass^{r['k']} {r['pass_hat_k']:.1f}%  ({r['tasks']} held-out tasks)"
        )
    console.print(f"report: [bold]{out / 'report.md'}[/bold] (and {out / 'report.html'})")
