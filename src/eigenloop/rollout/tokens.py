"""The one place a dialogue becomes tokens, for SFT and RL alike, so both train on identical sequences.

The chat template is applied once; every further block of messages is appended as a *template delta*: the text
the template renders for the history plus the block, minus the text it renders for the history alone. That
is only sound when the template has the prefix property (rendering more messages never rewrites what came
before); it is checked at every step and a template that breaks it fails loudly (`TemplateError`) instead of
silently training on tokens the policy never saw.

Assistant turns are split in three: the generation prompt (what `add_generation_prompt=True` adds, mask 0),
the body up to and including the turn-end marker (the tokenizer's EOS text unless told otherwise: mask 1, the
tokens the policy produces), and whatever the template writes after the marker (a newline, mask 0). In RL the
body is exactly the ids the policy sampled (`DialogueTokens.add_policy_turn`), never decoded and re-encoded; in
SFT it is the template's rendering of the reference message (`DialogueTokens.add_assistant`).

What the agent sees: user turns' text, its own turns and the results of its own tool calls. The simulated user's
tool calls (dual control) and their results are the user's business and are left out, as in tau2-bench.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.llm.base import ChatMessage, ToolCallRequest, to_template_messages
from eigenloop.llm.tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, parse_tool_calls

# Renders and encodings are remembered across dialogues: every episode of a task opens with the same system prompt,
# tools and (mostly) first user message, and every assistant turn with the same generation prompt, so about half of
# them repeat. Both are pure functions of their keys as long as a tokenizer's vocabulary is not changed once in use
# (its chat template may be: it is part of the key). Bounded, so memory stays flat however many episodes run.
_RENDERS_CACHED = 256
_ENCODINGS_CACHED = 1024


class TemplateError(ValueError):
    """The chat template cannot be applied incrementally (it rewrites earlier turns) or failed to render."""


@dataclass
class TokenizedDialogue:
    token_ids: list[int]
    policy_mask: list[int]
    """1 where the token belongs to an assistant turn's body (what the policy produces), 0 elsewhere."""


@dataclass(frozen=True)
class PolicyTurn:
    """What the policy's sampled ids say, read back for the environment (the ids themselves stay as sampled)."""

    message: pb.Message
    malformed: bool
    """Some `<tool_call>` block did not parse; the caller answers with a tool error turn."""


_ROLE_NAMES: dict[int, Any] = {
    pb.ROLE_SYSTEM: "system",
    pb.ROLE_USER: "user",
    pb.ROLE_ASSISTANT: "assistant",
    pb.ROLE_TOOL: "tool",
}


def tool_specs(tools: Sequence[pb.ToolSchema]) -> list[dict[str, Any]]:
    """Tool schemas in the OpenAI form chat templates expect."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": json.loads(t.parameters_json_schema or "{}"),
            },
        }
        for t in tools
    ]


@dataclass(frozen=True)
class _Tools:
    """The agent's tools as chat templates take them (`specs`), compared and hashed by the schemas they come from,
    so that a render can be looked up by its inputs."""

    schemas: tuple[tuple[str, str, str], ...]
    specs: list[dict[str, Any]] = field(compare=False, repr=False)

    @classmethod
    def of(cls, tools: Sequence[pb.ToolSchema]) -> _Tools:
        return cls(tuple((t.name, t.description, t.parameters_json_schema) for t in tools), tool_specs(tools))


def _render_chat(tokenizer: Any, tools: _Tools, chat: tuple[ChatMessage, ...], generation_prompt: bool) -> str:
    history = to_template_messages(chat)
    kwargs: dict[str, Any] = {"tools": tools.specs} if tools.specs else {}
    try:
        text = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=generation_prompt, **kwargs)
    except Exception as err:  # jinja2 errors (raise_exception in templates) and friends
        raise TemplateError(f"the chat template failed on {len(history)} message(s): {err}") from err
    if not isinstance(text, str):
        raise TemplateError(f"the chat template returned {type(text).__name__}, not text")
    return text


@functools.lru_cache(maxsize=_RENDERS_CACHED)
def _render_cached(
    tokenizer: Any, template: str, tools: _Tools, chat: tuple[ChatMessage, ...], generation_prompt: bool
) -> str:
    """`_render_chat`, remembered. `template` is the tokenizer's chat template at the call: part of the key, so a
    template swapped on the same tokenizer renders afresh."""
    return _render_chat(tokenizer, tools, chat, generation_prompt)


@functools.lru_cache(maxsize=_ENCODINGS_CACHED)
def _encode_cached(tokenizer: Any, text: str) -> tuple[int, ...]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer itself: same ids, without the Python wrapper's overhead
        return tuple(backend.encode(text, add_special_tokens=False).ids)
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def chat_message(message: pb.Message) -> ChatMessage:
    """A contract message as the chat interface's message (what the chat template renders)."""
    role = _ROLE_NAMES.get(message.role)
    if role is None:
        raise ValueError(f"message role {message.role} is unspecified or unknown")
    if message.role == pb.ROLE_TOOL:
        return ChatMessage(
            "tool", message.content or message.tool_result.content, tool_call_id=message.tool_result.call_id
        )
    calls = tuple(ToolCallRequest(c.id, c.name, c.arguments_json) for c in message.tool_calls)
    return ChatMessage(role, message.content, tool_calls=calls if message.role == pb.ROLE_ASSISTANT else ())


class DialogueTokens:
    """A dialogue's token sequence, grown block by block; see the module docstring for the rules.

    `extend` appends user and tool messages, `prompt` is what to generate from, `add_policy_turn` appends the
    ids the policy sampled (with their logprobs and policy version), `add_assistant` appends a reference
    assistant message (SFT). `token_ids`, `policy_mask` and `logprobs` have one entry per token.
    """

    def __init__(
        self,
        tokenizer: Any,
        tools: Sequence[pb.ToolSchema] = (),
        system_prompt: str = "",
        *,
        turn_end: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        if getattr(tokenizer, "chat_template", None) is None:
            raise TemplateError("the tokenizer has no chat template")
        end = turn_end if turn_end is not None else tokenizer.eos_token
        if not end:
            raise TemplateError("no turn-end marker: the tokenizer has no EOS token and none was given")
        self.turn_end: str = end
        end_ids = self._encode(end)
        eos = tokenizer.eos_token_id
        self.stop_token_ids: frozenset[int] = frozenset(
            ([end_ids[0]] if len(end_ids) == 1 else []) + ([int(eos)] if eos is not None else [])
        )
        """Ids that end an assistant turn: give them to the sampler as stop ids."""
        self._end_ids = end_ids
        self._tools = _Tools.of(tools)
        self.token_ids: list[int] = []
        self.policy_mask: list[int] = []
        self.logprobs: list[float] = []
        self.turns: list[pb.TurnSpan] = []
        self._history: tuple[ChatMessage, ...] = ()
        self._rendered = ""
        self._user_calling = False  # tool messages now answer the simulated user's calls (hidden from the agent)
        self._generation: tuple[str, Sequence[int]] | None = None  # the generation prompt after the current history
        if system_prompt:
            self.extend([pb.Message(role=pb.ROLE_SYSTEM, content=system_prompt)])

    # -- building --------------------------------------------------------------------------------------------

    def extend(self, messages: Sequence[pb.Message]) -> None:
        """Append user, tool and system messages (mask 0). Assistant messages go through `add_*`."""
        visible: list[pb.Message] = []
        for message in messages:
            if message.role == pb.ROLE_ASSISTANT:
                raise ValueError("assistant messages are appended with add_policy_turn or add_assistant")
            if message.role == pb.ROLE_USER:
                self._user_calling = bool(message.tool_calls)
                if message.content or not message.tool_calls:
                    visible.append(pb.Message(role=pb.ROLE_USER, content=message.content))
            elif message.role == pb.ROLE_TOOL and self._user_calling:
                continue
            else:
                visible.append(message)
        if not visible:
            return
        history = self._history + tuple(chat_message(m) for m in visible)
        text = self._render(history, generation_prompt=False)
        self._append(self._delta(text, what=f"{len(visible)} message(s) after {len(self._history)}"), mask=0)
        self._set_history(history, text)

    def prompt(self) -> list[int]:
        """The ids to generate the next assistant turn from: the dialogue so far plus the generation prompt."""
        return [*self.token_ids, *self._generation_prompt_ids()]

    def add_policy_turn(
        self, sampled_ids: Sequence[int], logprobs: Sequence[float], policy_version: int, message: pb.Message
    ) -> None:
        """Append the ids the policy sampled after `prompt()` (mask 1), as sampled; `message` is what they say
        (see `read_policy_turn`), kept so the template can render later turns. A turn cut before its turn-end
        marker is closed with the marker (mask 0), as the template would close it."""
        if len(logprobs) != len(sampled_ids):
            raise ValueError(f"{len(sampled_ids)} sampled ids but {len(logprobs)} logprobs")
        generation_ids = self._generation_prompt_ids()
        history, text, suffix = self._assistant_render(message)
        self._append(generation_ids, mask=0)
        start = len(self.token_ids)
        self.token_ids.extend(int(t) for t in sampled_ids)
        self.policy_mask.extend([1] * len(sampled_ids))
        self.logprobs.extend(float(lp) for lp in logprobs)
        self.turns.append(pb.TurnSpan(start=start, end=len(self.token_ids), policy_version=policy_version))
        if not sampled_ids or sampled_ids[-1] not in self.stop_token_ids:
            self._append(self._end_ids, mask=0)
        self._append(self._encode(suffix), mask=0)
        self._commit_assistant(history, text)

    def add_assistant(self, message: pb.Message) -> None:
        """Append a reference assistant message as the template renders it, its body masked 1 (SFT)."""
        generation_ids = self._generation_prompt_ids()
        history, text, suffix = self._assistant_render(message)
        body = text[len(self._rendered) :]
        body = body[len(self._generation_text()) : len(body) - len(suffix)]
        self._append(generation_ids, mask=0)
        self._append(self._encode(body), mask=1)
        self._append(self._encode(suffix), mask=0)
        self._commit_assistant(history, text)

    def result(self) -> TokenizedDialogue:
        return TokenizedDialogue(token_ids=list(self.token_ids), policy_mask=list(self.policy_mask))

    def trace(self, max_tokens: int | None = None) -> pb.TokenTrace:
        """The sequence as a TokenTrace; with `max_tokens`, trailing tokens past it are cut, which may only be
        environment or user tokens after the last policy turn (they carry no loss and condition nothing)."""
        end = len(self.token_ids) if max_tokens is None else max_tokens
        if self.turns and self.turns[-1].end > end:
            raise ValueError(f"cannot cut the trace at {end}: a policy turn ends at {self.turns[-1].end}")
        return pb.TokenTrace(
            token_ids=self.token_ids[:end],
            policy_mask=bytes(self.policy_mask[:end]),
            logprobs=self.logprobs[:end],
            turns=self.turns,
        )

    # -- template plumbing -----------------------------------------------------------------------------------

    def _encode(self, text: str) -> Sequence[int]:
        return _encode_cached(self.tokenizer, text) if text else ()

    def _append(self, ids: Sequence[int], *, mask: int) -> None:
        self.token_ids.extend(ids)
        self.policy_mask.extend([mask] * len(ids))
        self.logprobs.extend([0.0] * len(ids))

    def _render(self, history: tuple[ChatMessage, ...], *, generation_prompt: bool) -> str:
        template = self.tokenizer.chat_template
        if isinstance(template, str) and "strftime_now" not in template:
            return _render_cached(self.tokenizer, template, self._tools, history, generation_prompt)
        # Rendered afresh every time: a template that reads the clock (a date in the system turn) renders differently
        # from one day to the next, and a set of named templates is no single key.
        return _render_chat(self.tokenizer, self._tools, history, generation_prompt)

    def _delta(self, text: str, *, what: str) -> Sequence[int]:
        if not text.startswith(self._rendered):
            at = next((i for i, (a, b) in enumerate(zip(text, self._rendered, strict=False)) if a != b), len(text))
            raise TemplateError(
                f"the chat template is not prefix-stable: adding {what} rewrote earlier text at character {at} "
                f"({self._rendered[at : at + 40]!r} became {text[at : at + 40]!r}); it cannot be applied incrementally"
            )
        return self._encode(text[len(self._rendered) :])

    def _set_history(self, history: tuple[ChatMessage, ...], text: str) -> None:
        self._history, self._rendered = history, text
        self._generation = None

    def _generation_prompt(self) -> tuple[str, Sequence[int]]:
        """The text `add_generation_prompt` adds after the current history, and its ids (computed once per history)."""
        if self._generation is None:
            if not self._history:
                raise ValueError(
                    "there is nothing to respond to: add the user's first message before an assistant turn"
                )
            text = self._render(self._history, generation_prompt=True)
            if not text.startswith(self._rendered):
                raise TemplateError("the chat template's generation prompt rewrites the dialogue before it")
            delta = text[len(self._rendered) :]
            self._generation = (delta, self._encode(delta))
        return self._generation

    def _generation_text(self) -> str:
        return self._generation_prompt()[0]

    def _generation_prompt_ids(self) -> Sequence[int]:
        return self._generation_prompt()[1]

    def _assistant_render(self, message: pb.Message) -> tuple[tuple[ChatMessage, ...], str, str]:
        """The history with `message`, its rendering, and the text the template puts after the turn-end marker."""
        if message.role != pb.ROLE_ASSISTANT:
            raise ValueError(f"expected an assistant message, got role {message.role}")
        history = (*self._history, chat_message(message))
        text = self._render(history, generation_prompt=False)
        if not text.startswith(self._rendered):
            raise TemplateError("the chat template is not prefix-stable: an assistant turn rewrote earlier text")
        delta = text[len(self._rendered) :]
        generation = self._generation_text()
        if not delta.startswith(generation):
            raise TemplateError(
                f"the chat template opens an assistant turn with {delta[: len(generation) + 20]!r}, not with its "
                f"generation prompt {generation!r}: sampled turns would not match trained ones"
            )
        end = delta.rfind(self.turn_end)
        if end < len(generation):
            raise TemplateError(f"the chat template does not close assistant turns with {self.turn_end!r}")
        return history, text, delta[end + len(self.turn_end) :]

    def _commit_assistant(self, history: tuple[ChatMessage, ...], text: str) -> None:
        self._set_history(history, text)
        self._user_calling = False  # tool messages from here on answer the agent's calls


@functools.lru_cache(maxsize=16)
def _dropped_ids(tokenizer: Any) -> frozenset[int]:
    """Special tokens left out of a decoded policy turn: all but the tool-call markers (some tokenizers mark them)."""
    keep = {tokenizer.convert_tokens_to_ids(t) for t in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE)}
    return frozenset(set(tokenizer.all_special_ids) - keep)


def read_policy_turn(tokenizer: Any, sampled_ids: Sequence[int]) -> PolicyTurn:
    """The assistant message the sampled ids spell (special tokens dropped, tool-call markers kept), tool calls
    parsed from `<tool_call>` blocks; malformed blocks stay in the text and set `malformed`."""
    dropped = _dropped_ids(tokenizer)
    text = tokenizer.decode([t for t in sampled_ids if t not in dropped], skip_special_tokens=False)
    parsed = parse_tool_calls(str(text))
    calls = [
        pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json, side=pb.TOOL_SIDE_AGENT)
        for c in parsed.tool_calls
    ]
    return PolicyTurn(
        message=pb.Message(role=pb.ROLE_ASSISTANT, content=parsed.text, tool_calls=calls),
        malformed=parsed.malformed,
    )


def tokenize_dialogue(
    tokenizer: Any,
    messages: Sequence[pb.Message],
    tools: Sequence[pb.ToolSchema] = (),
    system_prompt: str = "",
) -> TokenizedDialogue:
    """A whole dialogue (e.g. a reference dialogue for SFT) as tokens, exactly as an episode would build them."""
    dialogue = DialogueTokens(tokenizer, tools, system_prompt)
    block: list[pb.Message] = []
    for message in messages:
        if message.role == pb.ROLE_ASSISTANT:
            dialogue.extend(block)
            block = []
            dialogue.add_assistant(message)
        else:
            block.append(message)
    dialogue.extend(block)
    return dialogue.result()
