"""`eigenloop domains`: list, inspect and check domains; import and export tau2-bench data."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from eigenloop import tau2
from eigenloop.checkers.mutate import Trajectory as Replay
from eigenloop.checkers.mutate import evaluate_trajectory, gold_trajectory, overall_score, score_task
from eigenloop.cli.errors import fail
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import DataFormatError, read_jsonl, read_tasks, write_jsonl
from eigenloop.domains import UnknownDomainError, available_domains, load_domain, sample_tasks, tau2_domain
from eigenloop.domains.base import Domain
from eigenloop.env.session import EnvSession

domains_app = typer.Typer(
    help="List, inspect and check domains; import and export tau2-bench data.", no_args_is_help=True
)
console = Console()


def _domain(name: str) -> Domain:
    try:
        return load_domain(name)
    except UnknownDomainError as exc:
        raise fail(str(exc)) from None


@domains_app.command("list")
def list_domains() -> None:
    """Every domain this installation can serve."""
    table = Table("domain", "agent tools", "user tools", "goals", "description")
    for name in available_domains():
        try:
            d = load_domain(name)
        except UnknownDomainError as exc:
            table.add_row(name, "-", "-", "-", f"[red]{exc}[/red]")
            continue
        table.add_row(name, str(len(d.agent_tools)), str(len(d.user_tools)), str(len(d.samplers)), d.description)
    console.print(table)


@domains_app.command("show")
def show(name: str) -> None:
    """A domain's tools, goals, assertion and setup functions, and policy."""
    d = _domain(name)
    table = Table("tool", "side", "kind", "description", title=f"{d.name}: {d.description}")
    for t in d.tools:
        table.add_row(t.name, t.side.value, t.kind.value, t.description.splitlines()[0] if t.description else "")
    console.print(table)
    console.print(f"goals: {', '.join(sorted(d.samplers)) or '-'}")
    console.print(f"assertion functions: {', '.join(sorted(d.assertions)) or '-'}")
    console.print(f"setup functions: {', '.join(sorted(d.setup_functions)) or '-'}")
    console.print(d.policy)


@domains_app.command("check")
def check(
    name: str,
    seed: Annotated[int, typer.Option(help="seed of the generated DB and the mutants")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Generate the DB, replay every built-in sample task, run mutation testing, time the tools."""
    d = _domain(name)
    started = time.perf_counter()
    d.initial_state(seed)
    generate_s = time.perf_counter() - started
    tasks = sample_tasks(name, seed)
    if not tasks:
        raise fail(f"domain {name!r} has no built-in sample tasks to check")
    latencies: list[float] = []
    for task in tasks:
        session = EnvSession(d, task=task, seed=seed)
        for call in gold_trajectory(task).calls:
            begin = time.perf_counter()
            session.call(call)
            latencies.append(time.perf_counter() - begin)
    # The tasks were drawn from the DB generated with `seed`, so their environments use it too.
    reports = [score_task(d, task, seed, env_seed=seed) for task in tasks]
    passed = sum(r.gold_reward == 1.0 for r in reports)
    weak = [t.id for t in tasks if evaluate_trajectory(d, t, Replay((), ()), env_seed=seed).value == 1.0]
    result = {
        "domain": d.name,
        "tasks": len(tasks),
        "gold_pass_rate": passed / len(tasks),
        "mutation_score": overall_score(reports),
        "mutants": sum(r.mutants for r in reports),
        "weak_checkers": weak,
        "tool_call_us_p50": statistics.median(latencies) * 1e6 if latencies else 0.0,
        "db_generation_s": generate_s,
    }
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        table = Table(
            "domain",
            "tasks",
            "gold pass rate",
            "mutation score",
            "mutants",
            "weak checkers",
            "tool call p50",
            "DB generation",
        )
        table.add_row(
            d.name,
            str(len(tasks)),
            f"{result['gold_pass_rate']:.2f}",
            f"{result['mutation_score']:.3f}",
            str(result["mutants"]),
            str(len(weak)),
            f"{result['tool_call_us_p50']:.0f} µs",
            f"{generate_s:.2f} s",
        )
        console.print(table)
        for report in reports:
            for survivor in report.survivors:
                console.print(f"[yellow]survived[/yellow] {report.task_id}: {survivor.description}")
    if passed < len(tasks) or weak:
        raise typer.Exit(code=1)


@domains_app.command("import-tau2")
def import_tau2(
    data_dir: Annotated[Path, typer.Argument(help="a tau2 domain folder: db.json or db.toml, tasks.json, policy")],
    domain: Annotated[str, typer.Option(help="which eigenloop domain implements its tools")],
    split: Annotated[str | None, typer.Option(help="only the tasks of this split in split_tasks.json")] = None,
    out: Annotated[Path | None, typer.Option(help="write tasks.jsonl and import.json here")] = None,
) -> None:
    """Load tau2 tasks, replay each one's gold actions and an empty trajectory, report checker quality."""
    base = _domain(domain)
    try:
        env = tau2_domain(base, data_dir)
        tasks = tau2.load_tasks(data_dir / "tasks.json", domain, split=split)
    except (UnknownDomainError, tau2.Tau2FormatError, OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    rows = []
    for task in tasks:
        gold = evaluate_trajectory(env, task, gold_trajectory(task))
        empty = EnvSession(env, task=task).evaluate([])
        rows.append(
            {
                "task": task.id,
                "gold_reward": gold.value,
                "gold_failure": gold.failure_reason,
                "passes_empty_trajectory": empty.value == 1.0,
                "unchecked": [pb.RewardComponent.Name(c) for c in gold.unchecked],
            }
        )
    weak = [r["task"] for r in rows if r["passes_empty_trajectory"]]
    gold_pass = sum(r["gold_reward"] == 1.0 for r in rows)
    unchecked = sum(bool(r["unchecked"]) for r in rows)
    summary = {
        "source": str(data_dir.resolve()),
        "domain": env.name,
        "tasks": len(tasks),
        "gold_pass": gold_pass,
        "weak_checkers": weak,
        "with_unchecked_components": unchecked,
    }
    table = Table("tasks", "gold replay = 1.0", "weak checkers (pass doing nothing)", "unchecked NL components")
    table.add_row(str(len(tasks)), str(gold_pass), str(len(weak)), str(unchecked))
    console.print(table)
    for row in rows:
        if row["gold_reward"] != 1.0:
            console.print(f"[red]gold replay failed[/red] {row['task']}: {row['gold_failure']}")
    if out is not None:
        write_jsonl(out / "tasks.jsonl", tasks)
        (out / "import.json").write_text(json.dumps({**summary, "per_task": rows}, indent=2) + "\n")
        console.print(
            f"wrote {out / 'tasks.jsonl'}; serve these tasks with EIGENLOOP_TAU2_DATA={data_dir.resolve().parent}"
        )


@domains_app.command("export-tau2")
def export_tau2(
    out: Annotated[Path, typer.Option(help="folder to write tasks.json / results.json into")],
    tasks_file: Annotated[Path | None, typer.Option("--tasks", help="tasks JSONL written by eigenloop")] = None,
    trajectories_file: Annotated[
        Path | None, typer.Option("--trajectories", help="trajectories JSONL written by eigenloop")
    ] = None,
) -> None:
    """Write eigenloop tasks (tasks.json) and trajectories (results.json "simulations") in tau2-bench's layout."""
    if tasks_file is None and trajectories_file is None:
        raise fail("give --tasks and/or --trajectories")
    try:
        tasks = read_tasks(tasks_file) if tasks_file else []
        trajectories = read_jsonl(trajectories_file, pb.Trajectory) if trajectories_file else []
    except DataFormatError as exc:
        raise fail(str(exc)) from None
    if tasks_file:
        tau2.write_tasks(tasks, out / "tasks.json")
        console.print(f"wrote {len(tasks)} tasks to {out / 'tasks.json'}")
    if trajectories_file:
        tau2.write_simulations(trajectories, out / "results.json")
        console.print(f"wrote {len(trajectories)} simulations to {out / 'results.json'}")
