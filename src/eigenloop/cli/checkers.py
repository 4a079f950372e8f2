"""`eigenloop checkers`: measure how well task checkers reject wrong trajectories (mutation testing)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from eigenloop.checkers.mutate import MutationReport, overall_score, score_task
from eigenloop.cli.errors import fail
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import UnknownDomainError, load_domain, sample_tasks
from eigenloop.domains.base import Domain

checkers_app = typer.Typer(help="Measure checker quality.", no_args_is_help=True)
console = Console()


@checkers_app.callback()
def _group() -> None:
    """Measure checker quality."""  # a callback keeps `mutate` a sub-command even while it is the only one


def _load(name: str) -> tuple[Domain, list[pb.Task]]:
    try:
        domain = load_domain(name)
        tasks = sample_tasks(name)
    except UnknownDomainError as exc:
        raise fail(str(exc), stderr=True) from None
    if not tasks:
        raise fail(f"domain {name!r} has no built-in sample tasks", stderr=True)
    return domain, tasks


def _as_json(domain: str, seed: int, reports: list[MutationReport]) -> dict[str, Any]:
    return {
        "domain": domain,
        "seed": seed,
        "overall_score": overall_score(reports),
        "mutants": sum(r.mutants for r in reports),
        "killed": sum(r.killed for r in reports),
        "tasks": [
            {
                "task_id": r.task_id,
                "gold_reward": r.gold_reward,
                "mutants": r.mutants,
                "killed": r.killed,
                "score": r.score,
                "survivors": [{"operator": s.operator, "description": s.description} for s in r.survivors],
            }
            for r in reports
        ],
    }


def _table(report: MutationReport) -> Table:
    table = Table(title=report.task_id, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    gold = f"{report.gold_reward:g}" if report.gold_passed else f"[red]{report.gold_reward:g} (gold fails)[/red]"
    color = "green" if report.score >= 1.0 else "yellow" if report.score >= 0.5 else "red"
    table.add_row("gold reward", gold)
    table.add_row("mutants", str(report.mutants))
    table.add_row("killed", str(report.killed))
    table.add_row("score", f"[{color}]{report.score:.2f}[/{color}]")
    survivors = "\n".join(f"{s.operator}: {s.description}" for s in report.survivors) or "-"
    table.add_row("survivors", survivors)
    return table


@checkers_app.command("mutate")
def mutate(
    domain: Annotated[str, typer.Option(help="domain whose built-in sample tasks to score")] = "toy",
    task_id: Annotated[str | None, typer.Option("--task", help="only this task")] = None,
    seed: Annotated[int, typer.Option(help="seed of the mutation operators' choices")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
) -> None:
    """Mutation-test the checkers of a domain's built-in sample tasks.

    Each task's gold trajectory is perturbed (dropped or changed writes, extra forbidden writes, unsaid
    information, reordered writes); a checker's score is the share of those mutants it rejects.
    """
    loaded, tasks = _load(domain)
    if task_id is not None:
        chosen = [t for t in tasks if t.id == task_id]
        if not chosen:
            raise fail(
                f"no sample task {task_id!r} in domain {domain!r}; tasks: {', '.join(t.id for t in tasks)}", stderr=True
            )
        tasks = chosen
    reports = [score_task(loaded, task, seed=seed) for task in tasks]
    if as_json:
        typer.echo(json.dumps(_as_json(domain, seed, reports), indent=2))
        return
    for report in reports:
        console.print(_table(report))
    killed, total = sum(r.killed for r in reports), sum(r.mutants for r in reports)
    console.print(
        f"overall mutation score: [bold]{overall_score(reports):.2f}[/bold] "
        f"({killed}/{total} mutants killed over {len(reports)} task(s))"
    )
