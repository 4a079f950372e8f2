"""`eigenloop user-sim`: data for fine-tuning the user model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console

from eigenloop import launcher
from eigenloop.cli.errors import fail
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as upb
from eigenloop.data import DataFormatError, read_tasks
from eigenloop.domains import UnknownDomainError, sample_tasks
from eigenloop.env.remote import ToolEnvClient
from eigenloop.rollout.scripted import replay_reference
from eigenloop.usersim.remote import ReplicaFailedError, UserSimClient
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
        raise fail("give exactly one of --data, --tasks, --domain", code=2)
    try:
        if domain is not None:
            loaded = sample_tasks(domain)
        else:
            loaded = read_tasks(tasks if tasks is not None else default_input(data))  # type: ignore[arg-type]
    except (UnknownDomainError, DataFormatError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    examples, skipped = sft_examples(loaded)
    if not examples:
        raise fail(f"none of the {len(loaded)} tasks has a reference dialogue to learn from")
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


SPEAKERS = {
    pb.ROLE_USER: "[cyan]user[/cyan]",
    pb.ROLE_ASSISTANT: "[green]agent[/green]",
    pb.ROLE_TOOL: "[dim]tool[/dim]",
}


def _show(message: pb.Message) -> None:
    calls = ", ".join(f"{c.name}({c.arguments_json})" for c in message.tool_calls)
    text = " ".join(part for part in (message.content, f"→ {calls}" if calls else "") if part)
    console.print(f"{SPEAKERS.get(message.role, '?'):>20} {text[:300]}", highlight=False)


@user_sim_app.command("replay")
def replay(
    domain: Annotated[str, typer.Option(help="domain whose built-in sample tasks to play")] = "telecom",
    task_id: Annotated[str | None, typer.Option("--task", help="only this task (default: the first)")] = None,
    toolenv: Annotated[
        str | None, typer.Option(help="toolenv address (default: the one `eigenloop up` started)")
    ] = None,
    user_sim: Annotated[str | None, typer.Option("--user-sim", help="user_sim address(es)")] = None,
) -> None:
    """Play a task's reference agent turns against the running user_sim and toolenv; show the dialogue and reward."""
    tasks = [t for t in sample_tasks(domain) if task_id in (None, t.id)][: None if task_id else 1]
    if not tasks:
        raise fail(f"no sample task {task_id!r} in domain {domain!r}")
    env_address, user_address = toolenv or launcher.addresses("toolenv"), user_sim or launcher.addresses("user_sim")
    if not env_address or not user_address:
        raise fail("toolenv and user_sim must be running: `eigenloop up` (or pass the addresses)")
    with ToolEnvClient(env_address) as envs, UserSimClient(user_address) as users:
        for task in tasks:
            console.rule(f"{task.id}: {task.description}")
            try:
                with envs.session(task=task) as session, users.conversation(task) as conversation:
                    episode = replay_reference(task, session, conversation, on_message=_show)
            except (grpc.RpcError, ReplicaFailedError) as exc:
                raise fail(str(exc)) from None
            assert episode.reward is not None
            last = episode.user_turns[-1]
            stop = upb.StopReason.Name(last.stop_reason).removeprefix("STOP_REASON_").lower() if last.stop else "-"
            invalid = sum(not t.validity.valid for t in episode.user_turns)
            console.print(
                f"reward {episode.reward.value:g}  user stop: {stop}  invalid user turns: {invalid}  "
                f"(user: {conversation.replica_id})"
            )
