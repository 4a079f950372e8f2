"""`eigenloop eval --model PATH --tasks FILE -k 4`: pass@1 and pass^k per domain with the rollout manager.

Policy, toolenv and user_sim run in this process unless their addresses are given (or `--services`, which uses
the replicas `eigenloop up` started / EIGENLOOP_ADDRESSES_*). Writes eval.json, trajectories.jsonl (messages,
token ids, masks, logprobs, reward breakdown) and tau2_simulations.json (tau2-bench's results layout) to --out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from eigenloop import launcher
from eigenloop.cli.errors import fail
from eigenloop.data import DataFormatError, read_tasks, write_jsonl
from eigenloop.rollout.episode import EpisodeConfig
from eigenloop.rollout.evaluation import EvalReport, score_groups
from eigenloop.rollout.manager import RolloutConfig
from eigenloop.tau2 import write_simulations

console = Console()


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(report: EvalReport) -> Table:
    table = Table(title=f"pass@1 and pass^{report.k}")
    for column in ("domain", "tasks", "episodes", "pass@1", f"pass^{report.k}", "reward", "truncated", "infra failed"):
        table.add_column(column, justify="left" if column == "domain" else "right")
    for score in [*report.domains, report.overall]:
        table.add_row(
            score.domain,
            str(score.tasks),
            str(score.episodes),
            _rate(score.pass_at_1),
            _rate(score.pass_hat_k),
            _rate(score.mean_reward),
            str(score.truncated),
            str(score.infra_failed),
        )
    return table


def eval_command(
    model: Annotated[Path, typer.Option(help="the policy's model directory (tokenizer + weights)")],
    tasks: Annotated[Path, typer.Option(help="tasks JSONL")],
    k: Annotated[int, typer.Option("-k", help="samples per task (pass^k)")] = 4,
    out: Annotated[Path, typer.Option(help="folder for eval.json, trajectories.jsonl, tau2_simulations.json")] = Path(
        "eval"
    ),
    temperature: Annotated[float, typer.Option(help="policy sampling temperature (0: greedy)")] = 0.0,
    max_turns: Annotated[int, typer.Option(help="policy turns per episode")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="tokens per policy turn")] = 256,
    max_tokens: Annotated[int, typer.Option(help="tokens per episode")] = 4096,
    concurrency: Annotated[int, typer.Option(help="episodes in flight")] = 32,
    seed: Annotated[int, typer.Option(help="seeds user phrasing and sampling")] = 0,
    inference: Annotated[str | None, typer.Option(help="inference address(es); default: in-process")] = None,
    toolenv: Annotated[str | None, typer.Option(help="toolenv address(es); default: in-process")] = None,
    user_sim: Annotated[str | None, typer.Option(help="user_sim address(es); default: in-process procedural")] = None,
    services: Annotated[bool, typer.Option(help="use the running services for whatever has no address")] = False,
) -> None:
    """Run k episodes per task and report pass@1 and pass^k per domain."""
    from eigenloop.rollout.factory import rollout_manager

    if k < 1:
        raise typer.BadParameter("must be >= 1", param_hint="-k")
    try:
        loaded = read_tasks(tasks)
    except (DataFormatError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    if not loaded:
        raise fail(f"{tasks} holds no tasks")
    if services:
        inference = inference or launcher.addresses("inference")
        toolenv = toolenv or launcher.addresses("toolenv")
        user_sim = user_sim or launcher.addresses("user_sim")
    config = RolloutConfig(
        group_size=k,
        max_in_flight=concurrency,
        seed=seed,
        episode=EpisodeConfig(
            max_turns=max_turns, max_new_tokens=max_new_tokens, max_tokens=max_tokens, temperature=temperature
        ),
    )
    with rollout_manager(model, config, inference=inference, toolenv=toolenv, user_sim=user_sim) as manager:
        groups = list(manager.rollout(loaded))
        stats = manager.stats
    report = score_groups(groups, k)
    trajectories = [t for g in groups for t in g.trajectories]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "eval.json.tmp"
    tmp.write_text(report.model_dump_json(indent=2) + "\n")
    tmp.replace(out / "eval.json")
    write_jsonl(out / "trajectories.jsonl", trajectories)
    write_simulations(trajectories, out / "tau2_simulations.json")
    console.print(_table(report))
    if report.overall.failures:
        console.print(
            "how episodes failed: " + ", ".join(f"{label} {n}" for label, n in report.overall.failures.items())
        )
        console.print("kinds of mistake: " + ", ".join(f"{kind} {n}" for kind, n in report.overall.mistakes.items()))
    console.print(
        f"{stats.episodes} episodes, {stats.failed_attempts} failed attempts retried, {stats.dropped} dropped, "
        f"{stats.format_errors} malformed tool calls; written to {out}/"
    )
