"""`eigenloop env`: talk to toolenv from the shell (list domains, call one tool, run a scripted episode)."""

from __future__ import annotations

import json
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from eigenloop import launcher
from eigenloop.cli.errors import fail
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Side
from eigenloop.env.remote import ToolEnvClient
from eigenloop.protocol import text_message, tool_call

env_app = typer.Typer(help="Inspect domains and run tool calls through the toolenv service.", no_args_is_help=True)
console = Console()

Address = Annotated[
    str | None,
    typer.Option("--address", help="toolenv host:port (or a list); default: the one `eigenloop up` started"),
]


def _client(address: str | None) -> ToolEnvClient:
    target = address or launcher.addresses("toolenv")
    if not target:
        raise fail("no toolenv running; start one with `eigenloop up` or pass --address")
    return ToolEnvClient(target)


def _rpc_failed(exc: grpc.RpcError) -> typer.Exit:
    return fail(f"toolenv said {exc.code().name}: {exc.details()}")


@env_app.command("domains")
def domains(address: Address = None) -> None:
    """List the domains toolenv serves."""
    with _client(address) as client:
        try:
            summaries = client.list_domains()
        except grpc.RpcError as exc:
            raise _rpc_failed(exc) from None
    table = Table("domain", "agent tools", "user tools", "description")
    for d in summaries:
        table.add_row(d.name, str(d.agent_tool_count), str(d.user_tool_count), d.description)
    console.print(table)


@env_app.command("describe")
def describe(domain: str, address: Address = None) -> None:
    """Show a domain's tools (with their argument schemas) and its policy."""
    with _client(address) as client:
        try:
            description = client.describe(domain)
        except grpc.RpcError as exc:
            raise _rpc_failed(exc) from None
    table = Table("tool", "side", "kind", "arguments", "description")
    for t in [*description.tools, *description.user_tools]:
        params = json.loads(t.parameters_json_schema).get("properties", {})
        table.add_row(
            t.name,
            pb.ToolSide.Name(t.side)[10:].lower(),
            pb.ToolKind.Name(t.kind)[10:].lower(),
            ", ".join(params),
            t.description,
        )
    console.print(table)
    console.print(description.policy)


@env_app.command("call-tool")
def call_tool(
    tool: Annotated[str, typer.Argument(help="tool name")],
    arguments: Annotated[str, typer.Option("--args", help="JSON object of arguments")] = "{}",
    domain: Annotated[str, typer.Option(help="domain to open a fresh session in")] = "toy",
    side: Annotated[Side, typer.Option(help="who calls the tool")] = Side.AGENT,
    seed: int = 0,
    address: Address = None,
) -> None:
    """Call one tool in a fresh session and print the result (the session is discarded afterwards)."""
    with _client(address) as client:
        try:
            with client.session(domain, seed=seed) as session:
                result = session.call(
                    pb.ToolCall(name=tool, arguments_json=arguments, side=tool_call(tool, side=side).side)
                )
        except grpc.RpcError as exc:
            raise _rpc_failed(exc) from None
    if result.error:
        console.print(f"[red]{pb.ToolErrorKind.Name(result.error_kind)}[/red] {result.content}")
        raise typer.Exit(code=2)
    console.print_json(result.content) if result.content.startswith(("{", "[")) else console.print(result.content)


@env_app.command("episode")
def episode(
    domain: Annotated[str, typer.Option(help="domain whose built-in sample tasks to replay")] = "toy",
    task_id: Annotated[str | None, typer.Option("--task", help="only this task")] = None,
    address: Address = None,
) -> None:
    """Replay the gold tool calls of the built-in sample tasks through toolenv and show each reward."""
    from eigenloop.domains.toy.tasks import sample_tasks

    if domain != "toy":
        raise fail(f"built-in sample tasks exist for 'toy' only, not {domain!r}")
    tasks = [t for t in sample_tasks() if task_id in (None, t.id)]
    if not tasks:
        raise fail(f"no sample task {task_id!r}")
    table = Table("task", "tool calls", "reward", "breakdown")
    with _client(address) as client:
        for task in tasks:
            try:
                with client.session(task=task) as session:
                    messages = [text_message(pb.ROLE_USER, task.user.instruction)]
                    for call in task.checker.gold_actions:
                        result = session.call(call)
                        console.print(
                            f"[dim]{task.id}[/dim] {call.name}({call.arguments_json}) → {result.content[:100]}"
                        )
                    messages += [
                        text_message(pb.ROLE_ASSISTANT, f"Done: {info}.") for info in task.checker.communicate_info
                    ]
                    reward = session.evaluate(messages)
            except grpc.RpcError as exc:
                raise _rpc_failed(exc) from None
            breakdown = ", ".join(
                f"{pb.RewardComponent.Name(b.component)[17:].lower()}={b.value:g}" for b in reward.breakdown
            )
            table.add_row(task.id, str(len(task.checker.gold_actions)), f"{reward.value:g}", breakdown)
    console.print(table)
