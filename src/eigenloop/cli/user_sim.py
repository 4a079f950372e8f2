"""`eigenloop user-sim`: data for fine-tuning the user model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from eigenloop.data import DataFormatError, read_tasks
from eigenloop.domains import UnknownDomainError, sample_tasks
from eigenloop.usersim.sft import default_input, sft_examples

user_sim_app = typer.Typer(help="The simulated user: fine-tuning data.", no_args_is_help=True)
console = Console()


@user_sim_app.callback()
def _group() -> None:
    """The simulated user: fine-tuning data."""  # keeps export-sft a sub-command while it is the only one


@user_sim_app.command("export-sft")
def export_sft(
    data: Annotated[Path | None, typer.Option(help="a dataset folder (accepted.jsonl or tasks.jsonl)")] = None,
    tasks: Annotated[Path | None, typer.Option(help="a tasks JSONL file")] = None,
    domain: Annotated[str | None, typer.Option(help="use this domain's built-in sample tasks")] = None,
    out: Annotated[Path | None, typer.Option(help="where to write (default: <data>/user_sft.jsonl)")] = None,
) -> None:
    """Turn reference dialogues into user-model SFT examples: user turns as targets, the task as system prompt."""
    if sum(x is not None for x in (data, tasks, domain)) != 1:
        console.print("[red]error:[/red] give exactly one of --data, --tasks, --domain")
        raise typer.Exit(code=2)
    try:
        if domain is not None:
            loaded = sample_tasks(domain)
        else:
            loaded = read_tasks(tasks if tasks is not None else default_input(data))  # type: ignore[arg-type]
    except (UnknownDomainError, DataFormatError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    examples, skipped = sft_examples(loaded)
    if not examples:
        console.print(f"[red]error:[/red] none of the {len(loaded)} tasks has a reference dialogue to learn from")
        raise typer.Exit(code=1)
    target = out or (data / "user_sft.jsonl" if data is not None else Path("user_sft.jsonl"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in examples))
    tmp.replace(target)
    user_turns = sum(m["role"] == "assistant" for e in examples for m in e["messages"])
    console.print(
        f"wrote {len(examples)} examples ({user_turns} user turns as targets) to {target}"
        + (f"; skipped {skipped} tasks without a reference dialogue" if skipped else "")
    )
