"""User-model SFT data: reference dialogues seen from the simulated user's side, the user's turns as targets.

Each example is the chat the LLM user sees at inference (the same system prompt and role mapping as
`LLMUser`): the agent's text as "user", the simulated user's turns — text and its own tool calls — as
"assistant" (the training targets), the results of its tool calls as "tool". The agent's own tool calls
are invisible to the user and left out. A dialogue that ends without the user's stop gets a closing
stop turn, so the model learns to end conversations.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import UnknownDomainError, load_domain
from eigenloop.domains.base import Domain
from eigenloop.llm.base import to_template_messages
from eigenloop.usersim.policies import ConversationView, chat_messages, tool_specs
from eigenloop.usersim.validity import STOP_TOKEN

CLOSING = f"Thank you, that's all. {STOP_TOKEN}"


def user_view(dialogue: Iterable[pb.Message]) -> list[pb.Message]:
    """The dialogue as the user lived it: agent text, the user's own turns, and its own tool results."""
    history: list[pb.Message] = []
    user_calls: set[str] = set()
    for message in dialogue:
        if message.role == pb.ROLE_ASSISTANT and message.content:
            history.append(pb.Message(role=pb.ROLE_ASSISTANT, content=message.content))
        elif message.role == pb.ROLE_USER:
            history.append(message)
            user_calls.update(c.id for c in message.tool_calls)
        elif message.role == pb.ROLE_TOOL and message.tool_result.call_id in user_calls:
            history.append(message)
    if not history or (STOP_TOKEN not in history[-1].content and history[-1].role != pb.ROLE_USER):
        history.append(pb.Message(role=pb.ROLE_USER, content=CLOSING))
    return history


def reference_view(task: pb.Task, domain: Domain | None) -> ConversationView:
    """The whole reference dialogue as the simulated user sees it: what user-model SFT trains on."""
    return ConversationView(
        task=task,
        domain=domain,
        history=tuple(user_view(task.reference_dialogue)),
        event="agent_message",
        turn=0,
        max_turns=0,
    )


def sft_example(task: pb.Task, domain: Domain | None) -> dict[str, Any] | None:
    """One training example, or None when the task has no reference dialogue to learn from."""
    if not task.reference_dialogue:
        return None
    view = reference_view(task, domain)
    return {
        "task_id": task.id,
        "domain": task.domain,
        "messages": to_template_messages(chat_messages(view)),
        "tools": tool_specs(domain),
    }


def sft_examples(tasks: Iterable[pb.Task]) -> tuple[list[dict[str, Any]], int]:
    """(examples, tasks skipped for having no reference dialogue)."""
    examples, skipped = [], 0
    domains: dict[str, Domain | None] = {}
    for task in tasks:
        if task.domain not in domains:
            try:
                domains[task.domain] = load_domain(task.domain)
            except UnknownDomainError:
                domains[task.domain] = None
        example = sft_example(task, domains[task.domain])
        if example is None:
            skipped += 1
        else:
            examples.append(example)
    return examples, skipped


def default_input(data_dir: Path) -> Path:
    for name in ("accepted.jsonl", "tasks.jsonl"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(f"{data_dir}: no accepted.jsonl or tasks.jsonl")
