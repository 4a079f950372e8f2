"""Is a simulated user's turn one a real user could have written? Four rules, each violation a short string.

1. It reveals only what the user may know: every id-like token in its text (order, user, reservation and
   payment ids, emails, phone numbers, long digit strings) appears in the task's user scenario or earlier in
   the conversation (the agent's messages, the results of the user's own tool calls).
2. It stays in role: no assistant phrases ("How can I help you?", "As an AI"), no tool-call markup, no agent
   tool called by name in the text.
3. It does not do the agent's job: its tool calls are the domain's user-side tools only (none at all when the
   domain has no user tools or is unknown).
4. It ends properly: not empty unless it calls tools or stops; a stop carries a reason that fits its stop
   token, and nothing follows the token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as us
from eigenloop.domains.base import Domain, Side

STOP_TOKEN = "###STOP###"
TRANSFER_TOKEN = "###TRANSFER###"
OUT_OF_SCOPE_TOKEN = "###OUT-OF-SCOPE###"
STOP_TOKENS = (STOP_TOKEN, TRANSFER_TOKEN, OUT_OF_SCOPE_TOKEN)

# Which stop reasons each token may carry.
TOKEN_REASONS: dict[str, frozenset[int]] = {
    STOP_TOKEN: frozenset({us.STOP_REASON_GOAL_MET, us.STOP_REASON_GOAL_UNACHIEVABLE, us.STOP_REASON_MAX_TURNS}),
    TRANSFER_TOKEN: frozenset({us.STOP_REASON_TRANSFERRED}),
    OUT_OF_SCOPE_TOKEN: frozenset({us.STOP_REASON_OUT_OF_SCOPE}),
}
REASON_TOKEN: dict[int, str] = {
    us.STOP_REASON_GOAL_MET: STOP_TOKEN,
    us.STOP_REASON_GOAL_UNACHIEVABLE: STOP_TOKEN,
    us.STOP_REASON_MAX_TURNS: STOP_TOKEN,
    us.STOP_REASON_TRANSFERRED: TRANSFER_TOKEN,
    us.STOP_REASON_OUT_OF_SCOPE: OUT_OF_SCOPE_TOKEN,
}

# --- rule 1: id-like tokens --------------------------------------------------------------------------------------

EMAIL_RE = re.compile(r"\b[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# 555-781-4230, (555) 781-4230, +1 555 781 4230, 555.781.4230
PHONE_RE = re.compile(r"(?<![\w-])(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-])")
# snake_case ids ending in digits: user ids (mateo_sato_5867), payment ids (gift_card_4130601, paypal_5909250)
SNAKE_ID_RE = re.compile(r"(?<![\w@.])[a-z]+(?:_[a-z]+)*_\d{3,}(?![\w@])")
# Upper-case ids with at least two digits: order ids (#W5861863, O10001), user ids (U1001), reservation codes
# (H45Z3K), flight numbers (HAT095), customer/line/bill ids (C1062, L10119, B4041DDE5).
CODE_ID_RE = re.compile(r"(?<![\w@.])#?(?=[A-Z0-9]*[A-Z])(?=(?:[A-Z]*\d){2})[A-Z0-9]{4,}(?![\w@])")
# Five or more digits standing alone (item ids, tracking numbers, zip codes); not amounts like $12345 or 1.50000.
LONG_DIGITS_RE = re.compile(r"(?<![\w$.,@-])\d{5,}(?![\w@]|[.,]\d)")

_ID_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", EMAIL_RE),
    ("phone number", PHONE_RE),
    ("id", SNAKE_ID_RE),
    ("id", CODE_ID_RE),
    ("number", LONG_DIGITS_RE),
)


def id_like_tokens(text: str) -> list[tuple[str, str]]:
    """(kind, token) for every id-like token in `text`, in order of appearance, without repeats."""
    found: list[tuple[int, str, str]] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _ID_PATTERNS:
        for m in pattern.finditer(text):
            if any(m.start() < end and start < m.end() for start, end in taken):
                continue  # already part of an email or phone number
            taken.append((m.start(), m.end()))
            found.append((m.start(), kind, m.group(0)))
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for _, kind, token in sorted(found):
        if token not in seen:
            seen.add(token)
            out.append((kind, token))
    return out


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


@dataclass(frozen=True)
class Knowledge:
    """What the simulated user may say: the scenario text and what the conversation has shown them."""

    text: str
    phones: frozenset[str]

    @classmethod
    def of(cls, task: pb.Task, history: Sequence[pb.Message] = ()) -> Knowledge:
        user = task.user
        parts = [user.instruction, user.known_info, user.reason_for_call, user.persona]
        for message in history:
            if message.role == pb.ROLE_ASSISTANT:
                parts.append(message.content)
            elif message.role == pb.ROLE_TOOL:
                parts.append(message.tool_result.content or message.content)
        text = "\n".join(parts)
        return cls(text=text.lower(), phones=frozenset(_digits(p) for p in PHONE_RE.findall(text)))

    def knows(self, kind: str, token: str) -> bool:
        if kind == "phone number":
            digits = _digits(token)
            return any(digits == p or p.endswith(digits) or digits.endswith(p) for p in self.phones)
        bare = re.escape(token.lower().lstrip("#"))
        # Whole tokens only: knowing O10001 does not make O1000 known.
        return re.search(rf"(?<![a-z0-9_]){bare}(?![a-z0-9_])", self.text) is not None


def _unknown_ids(turn: us.UserTurn, knowledge: Knowledge) -> list[str]:
    return [
        f"revealed {'an' if kind[0] in 'aeiou' else 'a'} {kind} not in the scenario or conversation: {token}"
        for kind, token in id_like_tokens(turn.content)
        if not knowledge.knows(kind, token)
    ]


# --- rule 2: in role ---------------------------------------------------------------------------------------------

_ASSISTANT_PHRASES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("offered help like an agent", re.compile(r"\bhow (?:can|may|could) i (?:help|assist)(?: you)?\b", re.I)),
    ("offered help like an agent", re.compile(r"\b(?:is there )?anything else i can (?:help|do|assist)", re.I)),
    ("offered help like an agent", re.compile(r"\bi(?:'m| am) (?:here|happy|glad) to (?:help|assist) you\b", re.I)),
    ("spoke as an AI", re.compile(r"\bas an? (?:ai|artificial intelligence|language model|assistant)\b", re.I)),
    ("spoke as an AI", re.compile(r"\bi(?:'m| am) an? (?:ai|virtual assistant|language model|chatbot)\b", re.I)),
    (
        "thanked like an agent",
        re.compile(r"\bthank you for (?:contacting|calling|reaching out to|choosing) (?:us|our)\b", re.I),
    ),
    (
        "reported an agent action",
        re.compile(
            r"\bi(?:'ve| have) (?:cancell?ed|updated|modified|booked|processed|refunded|issued|exchanged) your\b",
            re.I,
        ),
    ),
)

_TOOL_MARKUP: tuple[re.Pattern[str], ...] = (
    re.compile(r"</?tool_call>|</?function_call>|</?tool_use>|<\|[a-z_]+\|>", re.I),
    re.compile(r"<function=\w+", re.I),
    re.compile(r"\{\s*\"(?:name|function|tool)\"\s*:\s*\"[^\"]+\"\s*,\s*\"(?:arguments|parameters|args)\"\s*:", re.I),
    re.compile(r"\"tool_calls\"\s*:", re.I),
    re.compile(r"\bfunctions\.\w+\s*\(", re.I),
)


def _role_violations(content: str, domain: Domain | None) -> list[str]:
    out: list[str] = []
    for label, pattern in _ASSISTANT_PHRASES:
        if pattern.search(content) and f"answered as the agent ({label})" not in out:
            out.append(f"answered as the agent ({label})")
    if any(p.search(content) for p in _TOOL_MARKUP):
        out.append("tool-call markup in the message text")
    if domain is not None:
        for tool in domain.agent_tools:
            called = re.search(rf"\b{re.escape(tool.name)}\s*\(", content)
            named = "_" in tool.name and re.search(rf"(?<![\w]){re.escape(tool.name)}(?![\w])", content)
            if called or named:
                out.append(f"named the agent tool {tool.name} in the message text")
    return out


# --- rule 3: user tools only -------------------------------------------------------------------------------------


def _tool_call_violations(calls: Iterable[pb.ToolCall], domain: Domain | None) -> list[str]:
    out: list[str] = []
    seen_ids: set[str] = set()
    for call in calls:
        tool = domain.tool(call.name) if domain is not None else None
        if domain is None or not domain.user_tools:
            out.append(f"called {call.name or '(no name)'}, but this domain has no user tools")
        elif tool is None:
            out.append(f"called unknown tool {call.name or '(no name)'}")
        elif tool.side is not Side.USER:
            out.append(f"called the agent tool {call.name} (the agent's job)")
        if call.side == pb.TOOL_SIDE_AGENT:
            out.append(f"tool call {call.name} is marked as the agent's")
        if not _is_json_object(call.arguments_json or "{}"):
            out.append(f"arguments of {call.name} are not a JSON object")
        if call.id and call.id in seen_ids:
            out.append(f"duplicate tool call id {call.id}")
        seen_ids.add(call.id)
    return out


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


# --- rule 4: termination -----------------------------------------------------------------------------------------


def stop_tokens_in(text: str) -> list[tuple[int, str]]:
    """(position, token) of every stop token in `text`, in order."""
    found = [(m.start(), token) for token in STOP_TOKENS for m in re.finditer(re.escape(token), text)]
    return sorted(found)


def _termination_violations(turn: us.UserTurn) -> list[str]:
    out: list[str] = []
    content = turn.content
    tokens = stop_tokens_in(content)
    if not content.strip() and not turn.tool_calls and not turn.stop:
        out.append("empty message: no text, no tool calls and no stop")
    if tokens:
        last_pos, last = tokens[-1]
        if content[last_pos + len(last) :].strip():
            out.append(f"text after the stop token {last}")
        if len({t for _, t in tokens}) > 1:
            out.append("more than one kind of stop token")
        if not turn.stop:
            out.append(f"stop token {last} but the turn does not stop")
    if turn.stop:
        if turn.stop_reason == us.STOP_REASON_UNSPECIFIED:
            out.append("stop without a reason")
        elif tokens and turn.stop_reason not in TOKEN_REASONS[tokens[-1][1]]:
            reason = us.StopReason.Name(turn.stop_reason)
            out.append(f"stop reason {reason} does not fit the stop token {tokens[-1][1]}")
        if turn.tool_calls:
            out.append("a stopping turn also calls tools")
    elif turn.stop_reason != us.STOP_REASON_UNSPECIFIED:
        out.append("a stop reason on a turn that does not stop")
    return out


# --- all rules ---------------------------------------------------------------------------------------------------


def check_turn(
    turn: us.UserTurn, *, task: pb.Task, domain: Domain | None, history: Sequence[pb.Message] = ()
) -> us.TurnValidity:
    """The validity of `turn`, the user's next turn after `history` (the conversation so far, without it)."""
    violations = [
        *_unknown_ids(turn, Knowledge.of(task, history)),
        *_role_violations(turn.content, domain),
        *_tool_call_violations(turn.tool_calls, domain),
        *_termination_violations(turn),
    ]
    return us.TurnValidity(valid=not violations, violations=violations)
