"""`eigenloop`: top-level commands and the sub-command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from eigenloop import launcher
from eigenloop.cli.checkers import checkers_app
from eigenloop.cli.domains import domains_app
from eigenloop.cli.env import env_app
from eigenloop.cli.errors import fail
from eigenloop.cli.eval import eval_command
from eigenloop.cli.quickstart import quickstart
from eigenloop.cli.synth import synth
from eigenloop.cli.train import train_app
from eigenloop.cli.user_sim import user_sim_app

app = typer.Typer(help="eigenloop: synthesize tool-use tasks and post-train agents on them.", no_args_is_help=True)
app.add_typer(env_app, name="env")
app.add_typer(domains_app, name="domains")
app.add_typer(checkers_app, name="checkers")
app.add_typer(user_sim_app, name="user-sim")
app.command()(quickstart)
app.add_typer(train_app, name="train")
app.command("eval")(eval_command)
app.command()(synth)
console = Console()

RunDir = Annotated[Path, typer.Option("--run-dir", help="where run.json and service logs live")]


def _parse_replicas(values: list[str]) -> dict[str, int]:
    counts = {}
    for value in values:
        name, sep, count = value.partition("=")
        if not sep or not count.isdigit() or int(count) < 1:
            raise typer.BadParameter(f"{value!r}: use NAME=COUNT, e.g. user_sim=3", param_hint="--replicas")
        counts[name] = int(count)
    return counts


@app.command()
def up(
    run_dir: RunDir = launcher.DEFAULT_RUN_DIR,
    only: Annotated[list[str] | None, typer.Option("--only", help="start just this service (repeatable)")] = None,
    replicas: Annotated[list[str] | None, typer.Option("--replicas", help="NAME=COUNT replicas (repeatable)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every replica to be SERVING")] = 30.0,
) -> None:
    """Start every installed service as a local process on loopback and wait until healthy."""
    skipped: dict[str, list[str]] = {}
    try:
        started = launcher.up(run_dir, only or (), _parse_replicas(replicas or []), timeout, skipped=skipped)
    except launcher.LauncherError as exc:
        raise fail(str(exc)) from None
    _print_status([(r, True, "SERVING") for r in started])
    for name, missing in skipped.items():
        console.print(f"[yellow]skipped[/yellow] {name}: set {', '.join(missing)} to start it")
    console.print(f"logs and ports: {launcher.state_file(run_dir)}   stop with: [bold]eigenloop down[/bold]")


@app.command()
def status(run_dir: RunDir = launcher.DEFAULT_RUN_DIR) -> None:
    """Show each service replica started by `eigenloop up`: process, address, health."""
    try:
        rows = launcher.status(run_dir)
    except launcher.LauncherError as exc:
        raise fail(str(exc)) from None
    if not rows:
        console.print(f"nothing running from {run_dir} (start with: eigenloop up)")
        raise typer.Exit(code=1)
    _print_status(rows)
    if any(h != "SERVING" for _, _, h in rows):
        raise typer.Exit(code=1)


@app.command()
def down(
    run_dir: RunDir = launcher.DEFAULT_RUN_DIR,
    timeout: Annotated[float, typer.Option(help="seconds to let services drain before SIGKILL")] = 20.0,
) -> None:
    """Stop the services started by `eigenloop up` (SIGTERM, drain, then SIGKILL if needed)."""
    try:
        outcome = launcher.down(run_dir, timeout)
    except launcher.LauncherError as exc:
        raise fail(str(exc)) from None
    if not outcome:
        console.print(f"nothing to stop in {run_dir}")
    for replica, how in outcome:
        console.print(f"{replica.name:<16} pid {replica.pid:<8} {how}")


def _print_status(rows: list[tuple[launcher.Replica, bool, str]]) -> None:
    table = Table(title="eigenloop services")
    for column in ("service", "replica", "pid", "gRPC", "metrics", "health", "log"):
        table.add_column(column)
    for replica, alive, health in rows:
        color = "green" if health == "SERVING" else "red"
        table.add_row(
            replica.service,
            str(replica.index),
            str(replica.pid) if alive else f"{replica.pid} (gone)",
            replica.address,
            f"http://{launcher.HOST}:{replica.metrics_port}/metrics",
            f"[{color}]{health}[/{color}]",
            replica.log,
        )
    console.print(table)
