"""Training examples: dialogues as (token ids, loss mask), and the rows and batches they are packed into.

Agent SFT tokenizes a reference dialogue with `eigenloop.rollout.tokens.tokenize_dialogue`, the same code that
builds rollout token traces, so SFT and RL train on identical sequences; the mask marks the agent's turns. User
SFT tokenizes the dialogue as the LLM user sees it (`eigenloop.usersim.sft`), its own turns as targets.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import read_tasks
from eigenloop.domains import UnknownDomainError, load_domain, sample_tasks
from eigenloop.domains.base import Domain
from eigenloop.llm.base import ChatMessage
from eigenloop.protocol import tool_schema
from eigenloop.rollout.tokens import tokenize_dialogue
from eigenloop.training.config import DataConfig
from eigenloop.usersim.policies import UserPrompt, chat_messages
from eigenloop.usersim.sft import reference_view


class EmptyDatasetError(ValueError):
    """No usable training example: the run cannot start."""


@dataclass(frozen=True)
class Example:
    """One sequence to train on. `weights` is per token: the loss mask (SFT) or the advantage (GRPO)."""

    token_ids: list[int]
    mask: list[int]
    key: str = ""
    malformed: str = ""
    """Why the reference dialogue could not be rendered (unvalidated data can hold such dialogues); such an
    example has no tokens, and `usable` drops it."""


def _rendered(
    tokenizer: Any, task: pb.Task, messages: Sequence[pb.Message], tools: Sequence[pb.ToolSchema], system: str
) -> Example:
    try:
        tokens = tokenize_dialogue(tokenizer, messages, tools, system)
    except ValueError as exc:
        return Example([], [], task.id, malformed=str(exc))
    return Example(tokens.token_ids, tokens.policy_mask, task.id)


def load_tasks(data: DataConfig) -> tuple[list[pb.Task], list[pb.Task]]:
    """(train tasks, held-out tasks): every file and domain named, then the held-out split by id hash."""
    tasks: list[pb.Task] = []
    for path in data.tasks:
        tasks.extend(read_tasks(path))
    for name in data.domains:
        tasks.extend(sample_tasks(name))
    if data.eval_tasks:
        held = [t for path in data.eval_tasks for t in read_tasks(path)]
        held_ids = {t.id for t in held}
        return [t for t in tasks if t.id not in held_ids], held
    cut = int(data.eval_fraction * 10_000)
    train = [t for t in tasks if _bucket(t.id) >= cut]
    held = [t for t in tasks if _bucket(t.id) < cut]
    return train, held


def _bucket(task_id: str) -> int:
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:4], "big") % 10_000


class _Domains:
    def __init__(self) -> None:
        self._cache: dict[str, Domain | None] = {}

    def get(self, name: str) -> Domain | None:
        if name not in self._cache:
            try:
                self._cache[name] = load_domain(name)
            except UnknownDomainError:
                self._cache[name] = None
        return self._cache[name]


def agent_context(
    domain: Domain | None, *, system_prompt: str | None = None, tools_in_prompt: bool = True
) -> tuple[list[pb.ToolSchema], str]:
    """The agent's tools and system prompt as an episode gives them to the policy (rollout.episode.run_episode):
    the domain's policy unless `system_prompt` is set, its tools unless `tools_in_prompt` is off."""
    if domain is None:
        return [], system_prompt or ""
    tools = [tool_schema(t) for t in domain.agent_tools] if tools_in_prompt else []
    return tools, domain.policy if system_prompt is None else system_prompt


def agent_examples(
    tokenizer: Any, tasks: Iterable[pb.Task], *, system_prompt: str | None = None, tools_in_prompt: bool = True
) -> list[Example]:
    """Each task's reference dialogue as the agent sees it, the agent's turns as targets."""
    domains = _Domains()
    out = []
    for task in tasks:
        if not task.reference_dialogue:
            continue
        tools, system = agent_context(
            domains.get(task.domain), system_prompt=system_prompt, tools_in_prompt=tools_in_prompt
        )
        out.append(_rendered(tokenizer, task, task.reference_dialogue, tools, system))
    return out


def agent_examples_for(data: DataConfig) -> Callable[[Any, Sequence[pb.Task]], list[Example]]:
    """`agent_examples` with the prompt options of `data` (which must match the rollouts')."""
    return functools.partial(agent_examples, system_prompt=data.system_prompt, tools_in_prompt=data.tools_in_prompt)


_ROLES = {"user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT, "tool": pb.ROLE_TOOL}


def _as_message(message: ChatMessage) -> pb.Message:
    if message.role == "tool":
        return pb.Message(
            role=pb.ROLE_TOOL,
            content=message.content,
            tool_result=pb.ToolResult(call_id=message.tool_call_id or "", content=message.content),
        )
    calls = [pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json) for c in message.tool_calls]
    return pb.Message(role=_ROLES[message.role], content=message.content, tool_calls=calls)


def user_examples(tokenizer: Any, tasks: Iterable[pb.Task], *, prompt: UserPrompt = "full") -> list[Example]:
    """Each reference dialogue as the LLM user sees it (`usersim.policies.chat_messages` with the `prompt` the
    user_sim will use), the user's turns as targets: the chat the user_sim's local backend renders at inference,
    so the trained model fits it."""
    domains = _Domains()
    out = []
    for task in tasks:
        if not task.reference_dialogue:
            continue
        domain = domains.get(task.domain)
        chat = chat_messages(reference_view(task, domain), prompt)
        system = chat[0].content if chat and chat[0].role == "system" else ""
        messages = [_as_message(m) for m in chat if m.role != "system"]
        tools = [tool_schema(t) for t in domain.user_tools] if domain is not None else []
        out.append(_rendered(tokenizer, task, messages, tools, system))
    return out


def example_texts(tokenizer: Any, examples: Iterable[Example]) -> list[str]:
    """The text of every example that rendered (what a tokenizer is trained on)."""
    return [str(tokenizer.decode(e.token_ids)) for e in examples if not e.malformed]


def usable(examples: Sequence[Example], max_length: int) -> tuple[list[Example], dict[str, int]]:
    """Examples that fit and have something to learn, and how many were dropped by reason."""
    kept, dropped = [], {"malformed": 0, "too_long": 0, "no_targets": 0}
    for example in examples:
        if example.malformed:
            dropped["malformed"] += 1
        elif len(example.token_ids) > max_length:
            dropped["too_long"] += 1
        elif not any(example.mask):
            dropped["no_targets"] += 1
        else:
            kept.append(example)
    return kept, dropped


class Cursor:
    """An endless, reshuffled-every-epoch walk over `n` items; its position is what a checkpoint stores."""

    def __init__(self, n: int, seed: int, epoch: int = 0, position: int = 0) -> None:
        if n < 1:
            raise EmptyDatasetError("nothing to iterate over")
        self.n, self.seed, self.epoch, self.position = n, seed, epoch, position
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        order = list(range(self.n))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, count: int) -> list[int]:
        out = []
        for _ in range(count):
            if self.position == self.n:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            out.append(self._order[self.position])
            self.position += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


@dataclass
class Rows:
    """Sequences laid out for one forward pass: packed rows, or one padded row per sequence.

    `position_ids` restart at 0 for each sequence, which is how transformers recognises packed rows and keeps
    attention inside each sequence (masking_utils.find_packed_sequence_indices). Padding is a sequence of its own.
    `weights[i, t]` is the weight of the loss for predicting token t (0: no loss); `sequence[i, t]` is the index
    of the sequence token t belongs to (-1 for padding); `old_logprobs` and `advantages` are filled for GRPO.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    weights: torch.Tensor
    sequence: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def slice(self, start: int, stop: int) -> Rows:
        return self._map(lambda t: t[start:stop])

    def select(self, indices: Sequence[int]) -> Rows:
        at = torch.tensor(list(indices), dtype=torch.long)
        return self._map(lambda t: t[at])

    def to(self, device: torch.device) -> Rows:
        return self._map(lambda t: t.to(device))

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Rows:
        return Rows(*(fn(getattr(self, f.name)) for f in fields(self)))


def layout(
    sequences: Sequence[Example],
    *,
    max_length: int,
    packing: bool,
    pad_id: int,
    weights: Sequence[Sequence[float]] | None = None,
    old_logprobs: Sequence[Sequence[float]] | None = None,
    advantages: Sequence[float] | None = None,
    row_multiple: int = 1,
) -> Rows:
    """Lay sequences out in rows (first-fit packing in the given order, or one per row), padded to one width.

    `weights` default to the examples' masks. All-padding rows are added up to a multiple of `row_multiple` (so
    every process of a data-parallel group gets as many rows).
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for i, seq in enumerate(sequences):
        n = len(seq.token_ids)
        if n > max_length:
            raise ValueError(f"sequence {seq.key or i} has {n} tokens, more than max_length {max_length}")
        slot = next((b for b, free in enumerate(room) if free >= n), None) if packing else None
        if slot is None:
            bins.append([i])
            room.append(max_length - n)
        else:
            bins[slot].append(i)
            room[slot] -= n
    while len(bins) % row_multiple:
        bins.append([])
    width = max_length if packing else max((len(s.token_ids) for s in sequences), default=1)
    shape = (len(bins), max(width, 1))
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    weight_t = torch.zeros(shape, dtype=torch.float32)
    sequence = torch.full(shape, -1, dtype=torch.long)
    old_t = torch.zeros(shape, dtype=torch.float32)
    adv_t = torch.zeros(shape, dtype=torch.float32)
    for row, members in enumerate(bins):
        at = 0
        for i in members:
            seq = sequences[i]
            n = len(seq.token_ids)
            input_ids[row, at : at + n] = torch.tensor(seq.token_ids)
            position_ids[row, at : at + n] = torch.arange(n)
            w = weights[i] if weights is not None else seq.mask
            weight_t[row, at : at + n] = torch.tensor(w, dtype=torch.float32)
            sequence[row, at : at + n] = i
            if old_logprobs is not None:
                old_t[row, at : at + n] = torch.tensor(old_logprobs[i], dtype=torch.float32)
            if advantages is not None:
                adv_t[row, at : at + n] = advantages[i]
            at += n
        if at < shape[1]:  # padding continues as its own "sequence" so attention never mixes it in
            position_ids[row, at:] = torch.arange(shape[1] - at)
    return Rows(input_ids, position_ids, weight_t, sequence, old_t, adv_t)
