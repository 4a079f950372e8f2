"""`eigenloop synth --domain airline --rounds 4 --per-round 200 --out data/airline`: the self-evolving synthesis loop.

Against the generator and validator services when their addresses are known (--generator/--validator, or
EIGENLOOP_ADDRESSES_*, or the replicas `eigenloop up` started), else embedded in this process (the same code
those services run; gold calls execute in-process). See eigenloop.synthesis.run for what lands in --out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from eigenloop import launcher
from eigenloop.cli.errors import fail, print_error
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import UnknownDomainError, load_domain
from eigenloop.llm.procedural import ProceduralBackend
from eigenloop.synthesis.clients import GeneratorClient, ValidatorClient
from eigenloop.synthesis.generator import TaskGenerator
from eigenloop.synthesis.pipeline import Generation, ValidationCore
from eigenloop.synthesis.prompts import PromptSetError, check_prompt_set, default_prompt_set
from eigenloop.synthesis.run import RoundSummary, RunFolderError, SynthesisConfig, Validation, run_synthesis

console = Console()


def _initial(domain: str, prompt_set: Path | None) -> pb.PromptSet:
    if prompt_set is None:
        return default_prompt_set(domain)
    try:
        loaded = json_format.Parse(prompt_set.read_text(), pb.PromptSet())
    except (OSError, json_format.ParseError) as exc:
        raise PromptSetError(f"{prompt_set}: not a PromptSet JSON file: {exc}") from None
    loaded.domain = loaded.domain or domain
    if loaded.domain != domain:
        raise PromptSetError(f"{prompt_set} is for domain {loaded.domain!r}, not {domain!r}")
    check_prompt_set(loaded)
    return loaded


def _stack(generator: str | None, validator: str | None, embedded: bool) -> tuple[Generation, Validation, str]:
    if not embedded:
        generator = generator or launcher.addresses("generator")
        validator = validator or launcher.addresses("validator")
    if generator and validator:
        return GeneratorClient(generator), ValidatorClient(validator), f"services (generator {generator})"
    backend = ProceduralBackend()
    local = TaskGenerator(backend)
    return local, ValidationCore(backend, local), "embedded, procedural backend"


def _table(summaries: list[RoundSummary]) -> Table:
    table = Table(title="synthesis rounds")
    for column in ("round", "prompt set", "generated", "accepted", "yield", "mutation", "top failures"):
        table.add_column(column, justify="left" if column in ("prompt set", "top failures") else "right")
    for s in summaries:
        top = sorted(s.failures.items(), key=lambda kv: -kv[1])[:3]
        table.add_row(
            str(s.round),
            s.prompt_set_version,
            str(s.generated),
            str(s.accepted),
            f"{s.yield_:.3f}",
            "-" if s.mutation_score is None else f"{s.mutation_score:.3f}",
            ", ".join(f"{k} {v}" for k, v in top) or "-",
        )
    return table


def synth(
    domain: Annotated[str, typer.Option(help="domain to synthesize tasks for")],
    out: Annotated[Path, typer.Option(help="folder for accepted.jsonl, rejected.jsonl, rounds/, report.md")],
    rounds: Annotated[int, typer.Option(min=1, help="generate → validate → evolve rounds")] = 4,
    per_round: Annotated[int, typer.Option(min=1, help="candidate tasks per round")] = 200,
    seed: Annotated[int, typer.Option(help="same seed, same output (every file but timings.json)")] = 0,
    evolve: Annotated[bool, typer.Option(help="evolve the prompt set between rounds")] = True,
    validate: Annotated[bool, typer.Option(help="run every validation agent (--no-validate: executable only)")] = True,
    diversity: Annotated[bool, typer.Option(help="reject near-duplicates of accepted tasks")] = True,
    resume: Annotated[bool, typer.Option(help="continue after the last complete round in --out")] = False,
    minibatch: Annotated[int, typer.Option(min=1, help="tasks per evolution candidate evaluation")] = 16,
    prompt_set: Annotated[Path | None, typer.Option(help="PromptSet JSON to start from (default: built-in)")] = None,
    generator: Annotated[str | None, typer.Option(help="generator service address(es)")] = None,
    validator: Annotated[str | None, typer.Option(help="validator service address(es)")] = None,
    embedded: Annotated[bool, typer.Option(help="run in-process even when services are up")] = False,
) -> None:
    """Synthesize tasks round by round: generate, validate, evolve the generator's prompts."""
    try:
        load_domain(domain)
        initial = _initial(domain, prompt_set)
    except (UnknownDomainError, PromptSetError) as exc:
        raise fail(str(exc), code=2) from None
    config = SynthesisConfig(
        domain=domain,
        rounds=rounds,
        per_round=per_round,
        seed=seed,
        evolve=evolve,
        validate_tasks=validate,
        diversity=diversity,
        minibatch=minibatch,
    )
    generation, validation, where = _stack(generator, validator, embedded)
    console.print(f"synthesizing {domain}: {rounds} rounds x {per_round}, seed {seed}, {where}")
    with Progress(
        TextColumn("round {task.fields[round]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    ) as progress:  # fmt: skip
        bars: dict[int, TaskID] = {}

        def advance(round_: int, done: int, total: int) -> None:
            if round_ not in bars:
                bars[round_] = progress.add_task("generate", total=total, round=round_)
            progress.update(bars[round_], completed=done)

        try:
            summaries = run_synthesis(config, generation, validation, out, initial, resume=resume, progress=advance)
        except RunFolderError as exc:
            raise fail(str(exc), code=2) from None
        except grpc.RpcError as exc:
            print_error(f"a synthesis service failed: {exc.code().name}: {exc.details()}")
            console.print(f"complete rounds are kept in {out}; rerun with --resume")
            raise typer.Exit(code=1) from None
    console.print(_table(summaries))
    console.print(f"wrote {out / 'accepted.jsonl'}, {out / 'rejected.jsonl'} and {out / 'report.md'}")
