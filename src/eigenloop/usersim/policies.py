"""User policies: what the simulated user says next, given a read-only view of the conversation.

* `ProceduralUser`: rule-based, deterministic, domain-aware; follows the task's instruction literally. Its
  output is labelled "procedural" (its `name`), never passed off as an LLM's.
* `LLMUser`: prompts a ChatBackend with the scenario and the conversation seen from the user's side.
* `LatencyUser`: wraps another policy and sleeps a fixed time per turn, like a remote LLM would take.

Policies keep no per-conversation state: everything they need is in the `ConversationView`, so one policy
object serves any number of concurrent conversations.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as us
from eigenloop.domains.base import Domain, Tool
from eigenloop.llm.base import BackendError, ChatBackend, ChatMessage, Completion, ToolCallRequest
from eigenloop.usersim._procedural import Event, agent_refused, respond
from eigenloop.usersim.validity import OUT_OF_SCOPE_TOKEN, STOP_TOKEN, TRANSFER_TOKEN, stop_tokens_in


class UserSimError(RuntimeError):
    """The user simulator could not produce a turn for reasons outside the conversation (its LLM backend
    failed): the episode is an infrastructure failure, not an invalid user. Not a ConversationError."""


@dataclass(frozen=True, eq=False)
class ConversationView:
    """What a policy sees: the task, its domain, the conversation so far and what the user is answering.

    `history` holds the conversation from the user's side: ROLE_ASSISTANT messages are the agent's, ROLE_USER
    the simulated user's own turns (with their tool calls), ROLE_TOOL the results of those calls. Treat it
    as read-only.
    """

    task: pb.Task
    domain: Domain | None
    history: tuple[pb.Message, ...]
    # What the user is answering: the conversation opening, an agent message, or its own tool results.
    event: Event
    # User turns produced so far (this turn will be number `turn + 1`).
    turn: int
    max_turns: int
    seed: int = 0
    sampling: pb.SamplingParams = field(default_factory=pb.SamplingParams)

    @property
    def temperature(self) -> float:
        return self.sampling.temperature

    @property
    def user_tools(self) -> list[Tool]:
        return self.domain.user_tools if self.domain is not None else []

    @property
    def last_agent_message(self) -> str | None:
        for message in reversed(self.history):
            if message.role == pb.ROLE_ASSISTANT:
                return message.content
        return None


@runtime_checkable
class UserPolicy(Protocol):
    """Produces the simulated user's next turn. Deterministic for (policy, task, seed) at temperature 0."""

    name: str

    def next_turn(self, view: ConversationView) -> us.UserTurn: ...


class ProceduralUser:
    """A rule-based user that follows the task instruction faithfully (see eigenloop.usersim._procedural).

    It opens with the goal, answers the agent's questions with facts from the scenario (or says it does not
    know them; or looks them up with a user tool when the scenario says where), performs requested device
    actions with the domain's user tools one at a time and reports what they show, confirms proposals unless
    the scenario says it does not want them, insists once when told to, and stops when the agent says the
    request is done (GOAL_MET), transfers it (TRANSFERRED) or says it cannot be done (GOAL_UNACHIEVABLE).
    """

    name = "procedural"

    def next_turn(self, view: ConversationView) -> us.UserTurn:
        # Phrasing varies with the seed (and only phrasing): same seed, same words.
        rng = random.Random(f"{view.task.id}|{view.seed}|{view.turn}")
        return respond(view.task, view.domain, view.history, view.event, rng).turn()


class LatencyUser:
    """`inner`, slowed down by a fixed sleep per turn (stands in for a remote LLM in the scaling benchmark)."""

    def __init__(self, inner: UserPolicy, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"LatencyUser needs seconds >= 0, got {seconds}")
        self.inner = inner
        self.seconds = seconds
        self.name = inner.name

    def next_turn(self, view: ConversationView) -> us.UserTurn:
        time.sleep(self.seconds)
        return self.inner.next_turn(view)


# ---------------------------------------------------------------------------------------------------------------
# LLM-driven user
# ---------------------------------------------------------------------------------------------------------------

# tau2 has the agent speak first; here the user does, so the prompt starts with the agent's usual greeting.
AGENT_GREETING = "Hi! How can I help you today?"

_RULES = f"""\
Rules:
- You are the customer, never the agent. Write only your next message to the agent, one short message at a time.
- Use only information from your scenario and from this conversation. Never invent ids, emails, phone numbers,
  order or reservation numbers. If you are asked for something you do not know, say that you do not know it.
- Do not do the agent's job: do not look anything up for the agent and do not describe tool calls in your text.
- Follow your instruction faithfully; do not ask for anything it does not mention.
- When your goal is met, or the agent makes clear it cannot be done and you have nothing left to ask, end the
  conversation: write a short closing sentence followed by {STOP_TOKEN} as the very last thing.
- If the agent transfers you to a human agent, reply with {TRANSFER_TOKEN} only.
- If the agent asks you to do something outside your scenario that you cannot answer at all, reply with
  {OUT_OF_SCOPE_TOKEN} only.
- Never write anything after one of these tokens."""

_TOOL_RULES = """\
- You have your own tools (below) that act on your own device or account. When the agent asks you to check or
  change something on your side, call the matching tool, one action at a time, and then tell the agent what it
  showed. Never make up a result you did not get from a tool."""


UserPrompt = Literal["full", "compact"]
"""How the LLM user's system prompt is written: "full" (the scenario, every rule in prose, the tools) for a
pretrained LLM; "compact" (the scenario only; the chat template still lists the user's tools) for a small model
fine-tuned on user turns, which learns the rules from the dialogues: they are the same in every prompt and cost
~400 tokens."""


def system_prompt(task: pb.Task, domain: Domain | None, style: UserPrompt = "full") -> str:
    """The LLM user's system prompt: its scenario, the stop-token rules and, in dual control, its tools; `compact`
    style: the scenario only."""
    if style == "compact":
        return _compact_prompt(task)
    user = task.user
    parts = [
        "You are playing a customer contacting customer service"
        + (f" ({domain.description})" if domain is not None and domain.description else "")
        + ". Stay in this role for the whole conversation.",
        f"Your instruction:\n{user.instruction or '(none)'}",
    ]
    if user.persona:
        parts.append(f"Your persona:\n{user.persona}")
    if user.reason_for_call:
        parts.append(f"Why you are contacting support:\n{user.reason_for_call}")
    if user.known_info:
        parts.append(f"What you know (you may share it when it is needed):\n{user.known_info}")
    if user.unknown_info:
        parts.append(f"What you do not know (never make it up):\n{user.unknown_info}")
    rules = _RULES
    tools = domain.user_tools if domain is not None else []
    if tools:
        rules += "\n" + _TOOL_RULES
        listing = "\n".join(f"- {t.name}: {t.description.splitlines()[0] if t.description else ''}" for t in tools)
        parts.append(rules)
        parts.append(f"Your tools:\n{listing}")
    else:
        parts.append(rules)
    return "\n\n".join(parts)


def _compact_prompt(task: pb.Task) -> str:
    user = task.user
    parts = [f"Instruction: {user.instruction or '(none)'}"]
    if user.known_info:
        parts.append(f"Known: {user.known_info}")
    if user.unknown_info:
        parts.append(f"Unknown: {user.unknown_info}")
    return "\n".join(parts)  # the user's tools, if any, are listed by the chat template


def tool_specs(domain: Domain | None) -> list[dict[str, Any]]:
    """The domain's user tools in OpenAI function-calling form ([] when there are none)."""
    if domain is None:
        return []
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.json_schema}}
        for t in domain.user_tools
    ]


def chat_messages(view: ConversationView, prompt: UserPrompt = "full") -> list[ChatMessage]:
    """The conversation from the simulated user's perspective: the agent is "user", the simulated user
    "assistant" (with its tool calls), its tool results "tool"."""
    out = [ChatMessage("system", system_prompt(view.task, view.domain, prompt)), ChatMessage("user", AGENT_GREETING)]
    for message in view.history:
        if message.role == pb.ROLE_ASSISTANT:
            out.append(ChatMessage("user", message.content))
        elif message.role == pb.ROLE_USER:
            calls = tuple(ToolCallRequest(c.id, c.name, c.arguments_json) for c in message.tool_calls)
            out.append(ChatMessage("assistant", message.content, tool_calls=calls))
        elif message.role == pb.ROLE_TOOL:
            result = message.tool_result
            out.append(ChatMessage("tool", result.content or message.content, tool_call_id=result.call_id))
    return out


def turn_from_completion(completion: Completion, view: ConversationView) -> us.UserTurn:
    """A completion as a user turn. Never raises: odd output (empty, markup, text after a stop token) is
    kept as it is, for the validity checker to flag."""
    text = completion.text.strip()
    calls = [
        pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json or "{}", side=pb.TOOL_SIDE_USER)
        for c in completion.tool_calls
    ]
    tokens = stop_tokens_in(text)
    if not tokens:
        return us.UserTurn(content=text, tool_calls=calls)
    first = tokens[0][1]
    if first == TRANSFER_TOKEN:
        reason = us.STOP_REASON_TRANSFERRED
    elif first == OUT_OF_SCOPE_TOKEN:
        reason = us.STOP_REASON_OUT_OF_SCOPE
    else:
        last = view.last_agent_message
        refused = last is not None and agent_refused(last)
        reason = us.STOP_REASON_GOAL_UNACHIEVABLE if refused else us.STOP_REASON_GOAL_MET
    return us.UserTurn(content=text, tool_calls=calls, stop=True, stop_reason=reason)


class LLMUser:
    """A user played by an LLM behind `backend` (any ChatBackend: OpenAI-compatible, local transformers, fake).

    Temperature 0 unless the conversation was opened with a sampling temperature. A BackendError becomes a
    UserSimError (an infrastructure failure); anything the model writes becomes a turn, flagged by the
    validity checker when it breaks the rules.
    """

    def __init__(self, backend: ChatBackend, *, max_tokens: int = 512, prompt: UserPrompt = "full") -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.prompt: UserPrompt = prompt
        self.name = f"llm:{backend.name}"

    def next_turn(self, view: ConversationView) -> us.UserTurn:
        sampling = view.sampling
        seed = sampling.seed if sampling.HasField("seed") else view.seed
        try:
            completion = self.backend.complete(
                chat_messages(view, self.prompt),
                tools=tool_specs(view.domain) or None,
                temperature=sampling.temperature,
                max_tokens=sampling.max_new_tokens or self.max_tokens,
                seed=seed,
            )
        except BackendError as exc:
            raise UserSimError(f"user simulator backend {self.backend.name} failed: {exc}") from exc
        return turn_from_completion(completion, view)


def describe_turn(turn: us.UserTurn) -> str:
    """One line for logs: the text, the tool calls and the stop."""
    parts = [json.dumps(turn.content)]
    parts += [f"{c.name}({c.arguments_json})" for c in turn.tool_calls]
    if turn.stop:
        parts.append(f"STOP {us.StopReason.Name(turn.stop_reason)}")
    return " ".join(parts)


def make_policy(
    kind: str, *, backend: ChatBackend | None = None, latency_s: float = 0.0, prompt: UserPrompt = "full"
) -> UserPolicy:
    """A user policy by name: "procedural", or "llm" (needs `backend`; `prompt`: how its system prompt is
    written); `latency_s` > 0 wraps it in LatencyUser."""
    policy: UserPolicy
    if kind == "procedural":
        if backend is not None:
            raise ValueError("the procedural user takes no backend")
        policy = ProceduralUser()
    elif kind == "llm":
        if backend is None:
            raise ValueError("the llm user needs a ChatBackend: make_policy('llm', backend=...)")
        policy = LLMUser(backend, prompt=prompt)
    else:
        raise ValueError(f"unknown user policy {kind!r}; kinds: {', '.join(POLICY_KINDS)}")
    return LatencyUser(policy, latency_s) if latency_s > 0 else policy


POLICY_KINDS: Sequence[str] = ("procedural", "llm")
