"""The procedural user's reading of the scenario and of the agent's messages, and how it answers.

Everything is a pure function of (task, domain, conversation so far, seed), so one ProceduralUser serves any
number of conversations and replays identically. What it understands:

* the scenario: its goal sentences, identity facts (email, name, zip, phone, user/order/reservation ids,
  address, date of birth), the payment method and reason it should give, conditional rules such as
  "insist once" and things it does not want ("You do not want to change your plan");
* the agent's message: requests for device actions (mapped to the domain's user tools by their names and
  descriptions, not by a per-domain list), questions for facts, confirmations, transfers, refusals and
  completions.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as us
from eigenloop.domains.base import Domain, Tool, ToolKind
from eigenloop.usersim._text import (
    STOPWORDS,
    content_tokens,
    ensure_period,
    flatten,
    normalize,
    overlap,
    split_sentences,
    stem,
    to_first_person,
    tokens_match,
    words,
)
from eigenloop.usersim.validity import EMAIL_RE, PHONE_RE, STOP_TOKEN, TRANSFER_TOKEN

Event = Literal["open", "agent_message", "tool_results"]

# ---------------------------------------------------------------------------------------------------------------
# Reading the agent
# ---------------------------------------------------------------------------------------------------------------

_STRONG_REFUSAL = re.compile(
    r"\b(?:i|we)(?: still| just| really| simply)? (?:can't|cannot|can not|am unable|'m unable|are unable|"
    r"am not able|'m not able|won't be able|am not allowed|'m not allowed|'m not permitted|am not permitted|"
    r"are not allowed|have no way)\b|\bi'm sorry,? but\b|\bi am sorry,? but\b|"
    r"\bi(?:'m| am) afraid (?:not|i can't|i cannot|we can't|we cannot|that's not|that is not|it's not|it is not)\b|"
    r"\bnot able to (?:help|do|process)\b",
)
_WEAK_REFUSAL = re.compile(
    r"\b(?:cannot|can't|can not) be\b|\bcan no longer be\b|\bnot (?:possible|allowed|permitted|eligible|available)\b|"
    r"\bisn't (?:possible|allowed|eligible)\b|\bis not one of\b|\bineligible\b|\bno longer (?:possible|allowed)\b|"
    r"\bunfortunately\b",
)
_COMPLETION = re.compile(
    r"\b(?:done|all set|is now|are now|now has|now have|has been|have been|successfully|is booked|was charged|"
    r"will now|is requested|are requested|on its way|have a (?:great|good|nice|wonderful) day)\b",
)
_TRANSFER_DONE = re.compile(
    r"\byou are being transferred\b|\btransferring you\b|\bi(?:'ve| have) transferred you\b|"
    r"\bpassed your case to a human\b|\bhuman agent will (?:take over|be with you|contact you|help you)\b|"
    r"\btransferred to a human\b|\bi(?:'ve| have) (?:escalated|handed) your\b",
)
_TRANSFER_WORDS = re.compile(r"\btransfer|\bhuman (?:agent|representative)\b|\bsupervisor\b|\bspecialist\b")
_CLOSING = re.compile(
    r"\banything else (?:i can|that i can|to|you need|i may)\b|\bis there anything else\b|\banything more i can\b"
)
_WAITING = re.compile(
    r"\blet me (?:check|look|see|verify|pull)\b|\bone moment\b|\ba moment\b|\bbear with me\b|\bplease wait\b|"
    r"\bi'll (?:check|look)\b|\bi will (?:check|look)\b|\bhold on\b|\bjust a (?:moment|second|minute)\b",
)
_REQUEST_MARKERS = re.compile(
    r"\b(?:could|can|would|will) you\b|^\s*(?:please|kindly)\b|\bplease\b|\bi(?:'ll| will)? need (?:your|you to)\b|"
    r"\bmay i (?:have|get|ask)\b|\blet me know\b"
)
_CONFIRMATION = re.compile(
    r"\b(?:shall|should|may|can) i\b(?! (?:ask|have|get|know|see|verify|confirm your))|\bwould you like me to\b|"
    r"\bdo you want me to\b|\(yes/no\)|\byes or no\b|"
    r"\bdo you (?:confirm|agree|accept|approve)\b|\bis (?:that|this) (?:correct|right|ok|okay|alright|fine)\b|"
    r"\b(?:go ahead|proceed)\s*\?|\bwould you like (?:it|that|this|them|to proceed|to go ahead)\b|"
    r"\bdo you want (?:it|that|this|them)\b|\bok(?:ay)?\s*\?"
)
_WH_START = re.compile(r"^\s*(?:which|what|where|when|who|how|whose)\b")


def _lower(text: str) -> str:
    return normalize(text)


def agent_refused(text: str) -> bool:
    """Whether the agent's message says the request cannot be done (used for ###STOP### reasons too)."""
    low = _lower(text)
    if _STRONG_REFUSAL.search(low):
        return True
    return bool(_WEAK_REFUSAL.search(low)) and not _COMPLETION.search(low)


def agent_transferred(text: str) -> bool:
    return bool(_TRANSFER_DONE.search(_lower(text)))


def _is_question(sentence: str) -> bool:
    return "?" in sentence or bool(_REQUEST_MARKERS.search(_lower(sentence)))


def _offers_transfer(text: str) -> bool:
    """A question offering a transfer ("Would you like me to transfer you?"), as opposed to doing it."""
    return any("?" in s and _is_confirmation(s) and _TRANSFER_WORDS.search(_lower(s)) for s in split_sentences(text))


def _is_confirmation(sentence: str) -> bool:
    """A yes/no question about going ahead; "Which card should I use" is not one, "shall I proceed" is."""
    for clause in re.split(r",|;|\band\b", _lower(sentence)):
        if _CONFIRMATION.search(clause) and not _WH_START.search(clause):
            return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# Mapping requested device actions to user tools
# ---------------------------------------------------------------------------------------------------------------

_VERB_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"check", "look", "see", "open", "view", "read", "find", "verify", "inspect", "search", "go"}),
    frozenset({"turn", "toggle", "switch", "enable", "disable", "activate", "deactivate"}),
    frozenset({"reboot", "restart", "power"}),
    frozenset({"reseat", "reinsert", "remove", "take", "insert", "put", "pull", "pop"}),
    frozenset({"pay", "make", "settle"}),
    frozenset({"set", "change", "choose", "select", "configure", "update", "adjust"}),
    frozenset({"reset", "restore"}),
    frozenset({"run", "test", "perform", "do"}),
    frozenset({"try", "attempt", "send"}),
    frozenset({"connect", "join", "reconnect"}),
    frozenset({"disconnect", "leave"}),
    frozenset({"grant", "allow", "approve"}),
    frozenset({"install", "download"}),
    frozenset({"uninstall", "delete"}),
)
_ACTION_VERBS = frozenset().union(*_VERB_GROUPS)
_LEADING_FILLER = frozenset(
    {"please", "could", "can", "would", "will", "you", "kindly", "now", "first", "then", "also", "just", "and", "so",
     "next", "finally", "lastly", "ahead", "quickly", "simply", "once", "again"}
)  # fmt: skip
_NOT_ACTIONS = frozenset({"tell", "let", "show", "give", "share", "provide", "confirm", "describe", "say"})


def _verb_group(word: str) -> int | None:
    for i, group in enumerate(_VERB_GROUPS):
        if word in group or stem(word) in group:
            return i
    return None


@dataclass(frozen=True)
class _ToolEntry:
    tool: Tool
    verb_groups: frozenset[int]
    name_objects: tuple[str, ...]
    desc_tokens: tuple[str, ...]

    @property
    def desc_bigrams(self) -> frozenset[tuple[str, str]]:
        return frozenset(itertools.pairwise(self.desc_tokens))


def _describe(tool: Tool) -> str:
    # "(On your phone) Turn ..." / "(User side) Read ...": the parenthesised prefix says nothing about the action.
    return re.sub(r"^\s*\([^)]*\)\s*", "", tool.description.split("\n")[0])


@lru_cache(maxsize=64)
def _tool_index(domain: Domain) -> tuple[_ToolEntry, ...]:
    entries = []
    for tool in domain.user_tools:
        parts = tool.name.lower().split("_")
        description = _describe(tool)
        groups: set[int] = set()
        first_desc = words(description)[:1]
        for candidate in [parts[0], *first_desc]:
            group = _verb_group(candidate)
            if group is not None:
                groups.add(group)
        name_objects = tuple(
            stem(p) for i, p in enumerate(parts) if p not in STOPWORDS and not (i == 0 and _verb_group(p) is not None)
        )
        # Parenthesised asides ("(4g_5g_preferred, 4g_only, ...)", "(on cuts cellular ...)") list values or
        # side effects, not what the tool does: they would make "set X to 4g_5g_preferred" look like "check X".
        core = re.sub(r"\([^)]*\)", " ", description)
        desc_tokens = tuple(t for t in content_tokens(core) if _verb_group(t) is None or t not in parts)
        entries.append(_ToolEntry(tool, frozenset(groups), name_objects, desc_tokens))
    return tuple(entries)


@dataclass(frozen=True)
class PlannedCall:
    tool: Tool
    arguments: dict[str, Any]

    def key(self) -> tuple[str, str]:
        return self.tool.name, json.dumps(self.arguments, sort_keys=True)


def _segments(sentence: str) -> list[str]:
    return [s.strip() for s in re.split(r";|:|,|\bthen\b|\band\b|\bso that\b|\bso\b", sentence) if s.strip()]


def _action_words(segment: str) -> tuple[str | None, list[str]]:
    """(the segment's leading verb, its other words) when it reads like an instruction to act; else (None, [])."""
    ws = words(segment)
    i = 0
    while i < len(ws) and ws[i] in _LEADING_FILLER:
        i += 1
    if i >= len(ws):
        return None, []
    verb = ws[i]
    if verb in _NOT_ACTIONS or (verb not in _ACTION_VERBS and stem(verb) not in _ACTION_VERBS):
        return None, []
    if verb == "go" and i + 1 < len(ws) and ws[i + 1] in {"ahead"}:
        return None, []
    return verb, ws[i + 1 :]


def _score(entry: _ToolEntry, verb: str, objects: Sequence[str]) -> float | None:
    group = _verb_group(verb)
    verb_score = 0.0
    if group is not None:
        verb_score = 3.0 if group in entry.verb_groups else -2.0
    name_hits = sum(1 for o in entry.name_objects if any(tokens_match(o, t) for t in objects))
    remaining = [d for d in set(entry.desc_tokens) if not any(tokens_match(d, o) for o in entry.name_objects)]
    desc_hits = sum(1 for d in remaining if any(tokens_match(d, t) for t in objects))
    if name_hits == 0 and desc_hits < 2:
        return None
    bigrams = sum(1 for pair in itertools.pairwise(objects) if pair in entry.desc_bigrams)
    missing = len(entry.name_objects) - name_hits
    return verb_score + 2.0 * name_hits + desc_hits + bigrams - 0.5 * missing


def _fill_arguments(tool: Tool, segment: str, message: str) -> dict[str, Any] | None:
    """Arguments for `tool` read off the agent's words; None when a required one cannot be filled."""
    schema = tool.json_schema
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    arguments: dict[str, Any] = {}
    for name, spec in properties.items():
        options = _options(spec)
        value = next((o for o in options if _mentions(segment, o)), None)
        if value is None:
            value = next((o for o in options if _mentions(message, o)), None)
        if value is not None:
            arguments[name] = value
        elif name in required:
            return None
    return arguments


def _options(spec: dict[str, Any]) -> list[str]:
    if isinstance(spec.get("enum"), list):
        return [str(v) for v in spec["enum"]]
    description = str(spec.get("description", ""))
    found: list[str] = []
    for m in re.finditer(r"(?:one of|e\.g\.|for example|such as)\s*:?\s*([^.;()]+)", description, re.I):
        found += [o.strip() for o in re.split(r",|\bor\b", m.group(1)) if o.strip()]
    return sorted({o for o in found if re.fullmatch(r"[\w-]+", o)}, key=lambda o: (-len(o), o))


def _mentions(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(option.lower())}(?![\w])", _lower(text)) is not None


def plan_device_actions(text: str, domain: Domain | None, *, relaxed: bool = False) -> list[PlannedCall]:
    """The user-tool calls an agent message asks for, in the order asked (consecutive repeats merged).

    Only request sentences count ("Please turn Airplane Mode off", "could you run a speed test?"); with
    `relaxed`, any clause that starts with an action verb does (for hints like "look it up in your emails").
    """
    if domain is None or not domain.user_tools:
        return []
    index = _tool_index(domain)
    plan: list[PlannedCall] = []
    sentences = split_sentences(text)
    for s_index, sentence in enumerate(sentences):
        before = len(plan)
        if relaxed or _is_request_sentence(sentence):
            segments = _segments(re.sub(r"[()]", ",", sentence))
            for g_index, segment in enumerate(segments):
                verb, rest = _action_words(segment)
                if verb is None:
                    continue
                objects = [stem(w) for w in rest if w not in STOPWORDS]
                best = _best_tool(index, verb, objects)
                if best is None:
                    # "check it on your phone", "pay it": what "it" is comes from the words before.
                    context = " ".join([*sentences[:s_index], *segments[:g_index]])
                    objects = objects + [t for t in content_tokens(context) if t not in objects]
                    best = _best_tool(index, verb, objects)
                if best is not None:
                    _append(plan, best, segment, text)
        if not relaxed and len(plan) == before and _asks_about_users_side(sentence):
            # "What does your status bar show?": a question naming a read tool's object asks to look at it.
            look = _implicit_check(index, sentence)
            if look is not None:
                _append(plan, look, sentence, text)
    return plan


def _append(plan: list[PlannedCall], tool: Tool, segment: str, message: str) -> None:
    arguments = _fill_arguments(tool, segment, message)
    if arguments is None:
        return
    call = PlannedCall(tool, arguments)
    if not plan or plan[-1].key() != call.key():
        plan.append(call)


def _asks_about_users_side(sentence: str) -> bool:
    """ "What does your status bar show?", not "Shall I send you a payment request?"."""
    low = _lower(sentence)
    return "?" in sentence and not _is_confirmation(sentence) and re.search(r"\byour\b", low) is not None


def _implicit_check(index: Sequence[_ToolEntry], sentence: str) -> Tool | None:
    tokens = content_tokens(sentence)
    found = [
        e.tool
        for e in index
        if e.tool.kind is ToolKind.READ
        and len(e.name_objects) >= 2
        and all(any(tokens_match(o, t) for t in tokens) for o in e.name_objects)
    ]
    return found[0] if len(found) == 1 else None


def _best_tool(index: Sequence[_ToolEntry], verb: str, objects: Sequence[str]) -> Tool | None:
    best: tuple[float, int] | None = None
    for i, entry in enumerate(index):
        score = _score(entry, verb, objects)
        if score is None or score < 3.0:
            continue
        if best is None or score > best[0]:
            best = (score, i)
    return index[best[1]].tool if best is not None else None


def _is_request_sentence(sentence: str) -> bool:
    low = _lower(sentence)
    if _REQUEST_MARKERS.search(low):
        return True
    verb, _ = _action_words(re.split(r"[,;:]", sentence)[0])
    return verb is not None


# ---------------------------------------------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------------------------------------------

_META = re.compile(
    r"\bthe agent\b|\bwhenever\b|\bground your answer\b|\bdo the actions\b|\bif you are unsure\b|\bconfirm when\b|"
    r"\bagree once\b|\bend the (?:call|conversation)\b|\bnever make\b|\bshow mild\b|\bconsider the issue\b|"
    r"^\s*if\b|^\s*(?:complain|insist|accept|ask|confirm|agree|follow|be|stay|answer|say)\b",
    re.I,
)
_WANT = re.compile(r"\b(?:want|wants|need|needs|would like|'d like|wish|hope)\b", re.I)
_PAYMENT_RE = re.compile(
    r"(?:(?:visa|mastercard|amex|american express|discover)\s+)?credit card(?: ending in \d{4}| credit_card_\d+)?|"
    r"gift card(?: gift_card_\d+)?|paypal(?: account)?(?: paypal_\d+)?|(?:travel )?certificate(?: certificate_\d+)?",
    re.I,
)
_NAME_RE = re.compile(
    r"(?:\bYou are|\bYour name is|\bMy name is|\bI am|\bI'm|\bThis is)\s+([A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)+)"
)
_ADDRESS_RE = re.compile(
    r"(?:new address is|address is now|moved to|shipped to|ship it to|address to)\s+(.+?)(?=\s+and\b|;|\.(?:\s|$)|$)",
    re.I,
)
_DOB_RE = re.compile(r"(?:born(?: on)?|date of birth(?: is)?)\s*:?,?\s*(\d{4}-\d{2}-\d{2})", re.I)


def _id_after(keyword: str, code: str) -> re.Pattern[str]:
    return re.compile(rf"(?i:\b{keyword})(?:\s+(?i:id|number|code|#))?(?:\s+(?i:is))?\s*:?\s*({code})")


_SLOT_PATTERNS: dict[str, list[re.Pattern[str]]] = {
    "user_id": [
        _id_after("user", r"[a-z]+(?:_[a-z]+)*_\d{3,}\b|[A-Z]{1,2}\d{3,}\b"),
        re.compile(r"\b((?!(?:gift_card|credit_card|paypal|certificate)_)[a-z]+_[a-z]+_\d{3,})\b"),
    ],
    "order_id": [_id_after("order", r"#?[A-Z]{1,2}\d{4,}\b")],
    "reservation_id": [_id_after("reservation", r"[A-Z0-9]{6}\b")],
    "customer_id": [_id_after("customer", r"[A-Z]{1,2}\d{3,}\b")],
    "zip": [re.compile(r"(?i:zip(?: code)?|postal code)(?:\s+is)?\s*:?\s*(\d{5})")],
}


@dataclass(frozen=True)
class Slot:
    name: str
    label: str
    asked: re.Pattern[str]


SLOTS: tuple[Slot, ...] = (
    Slot("email", "email address", re.compile(r"\bemail\b")),
    Slot("name", "name", re.compile(r"(?<!user )(?<!app )(?<!file )\b(?:full |first and last |last |first )?name\b")),
    Slot("zip", "zip code", re.compile(r"\bzip\b|\bpostal code\b|\bpostcode\b")),
    Slot(
        "phone",
        "phone number",
        re.compile(
            r"\bphone number\b|\bmobile number\b|\bcontact number\b|\bnumber on (?:the|your) (?:account|line)\b"
        ),
    ),
    Slot("user_id", "user id", re.compile(r"\buser ?id\b|\buser ?name\b|\busername\b|\baccount id\b")),
    Slot("customer_id", "customer id", re.compile(r"\bcustomer id\b|\bcustomer number\b")),
    Slot("order_id", "order id", re.compile(r"\border (?:id|number|#)|\bwhich order\b")),
    Slot(
        "reservation_id",
        "reservation id",
        re.compile(
            r"\breservation (?:id|number|code|reference)\b|\bconfirmation (?:code|number)\b|"
            r"\bbooking (?:reference|code|id|number)\b|\bwhich reservation\b"
        ),
    ),
    Slot("address", "address", re.compile(r"(?<!email )\baddress\b")),
    Slot("dob", "date of birth", re.compile(r"\bdate of birth\b|\bbirth ?date\b|\bbirthday\b|\bdob\b")),
    Slot(
        "payment",
        "payment method",
        re.compile(
            r"\bpayment method\b|\bhow would you like to pay\b|\bpay (?:for|with)\b|\bwhich (?:card|account)\b|"
            r"\bwhat card\b|\b(?:charged|refunded) to\b"
        ),
    ),
    Slot("reason", "reason", re.compile(r"\bwhy\b|\breason\b")),
)
_SLOT_PHRASES = {
    "email": "My email address is {}.",
    "name": "My name is {}.",
    "zip": "My zip code is {}.",
    "phone": "My phone number is {}.",
    "user_id": "My user id is {}.",
    "customer_id": "My customer id is {}.",
    "order_id": "The order id is {}.",
    "reservation_id": "The reservation id is {}.",
    "address": "The address is {}.",
    "dob": "The date of birth is {}.",
    "payment": "Please use my {}.",
    "reason": "{}",
}


def extract_slot(slot: str, texts: Sequence[str]) -> str | None:
    """The value of `slot` in the first of `texts` that has one (scenario texts first, then tool results)."""
    for text in texts:
        value = _extract_one(slot, text)
        if value:
            return value
    return None


def _extract_one(slot: str, text: str) -> str | None:
    if not text:
        return None
    if slot == "email":
        m = EMAIL_RE.search(text)
        return m.group(0) if m else None
    if slot == "phone":
        m = PHONE_RE.search(text)
        return m.group(0).strip() if m else None
    if slot == "name":
        m = _NAME_RE.search(text)
        return m.group(1) if m else None
    if slot == "address":
        m = _ADDRESS_RE.search(text)
        return m.group(1).strip().rstrip(".") if m else None
    if slot == "dob":
        m = _DOB_RE.search(text)
        return m.group(1) if m else None
    if slot == "payment":
        m = _PAYMENT_RE.search(text)
        return m.group(0) if m else None
    if slot == "reason":
        return _reason(text)
    for pattern in _SLOT_PATTERNS.get(slot, []):
        m = pattern.search(text)
        if m:
            return m.group(1)
    return None


def _reason(text: str) -> str | None:
    m = re.search(r"\breason(?: is)?:\s*(.+?)(?:\.(?:\s|$)|$)", text, re.I)
    if m:
        return ensure_period(to_first_person(m.group(1)))
    m = re.search(r"\bbecause\s+(.+?)(?:[.;](?:\s|$)|$)", text, re.I)
    if m:
        said = to_first_person(m.group(1))
        if not re.match(r"I\b", said):
            said = said[:1].lower() + said[1:]
        return ensure_period(f"Because {said}")
    return None


@dataclass(frozen=True)
class Scenario:
    """What the procedural user takes from a task's UserScenario."""

    goal: tuple[str, ...]  # first-person goal sentences
    facts: tuple[str, ...]  # first-person fact sentences (instruction and known_info, no meta rules)
    sources: tuple[str, ...]  # texts facts are extracted from, in priority order
    unknown: str
    insist_once: str | None  # what to say once on the first refusal, when the instruction says so
    dont_want: tuple[tuple[str, tuple[str, ...]], ...]  # ("change my plan", tokens) the user refuses
    opening_ids: tuple[str, ...]  # identifiers worth giving in the first message


@lru_cache(maxsize=512)
def _scenario(serialized: bytes) -> Scenario:
    user = pb.UserScenario.FromString(serialized)
    instruction = split_sentences(user.instruction)
    plain = [s for s in instruction if not _META.search(s)]
    goal: list[str] = []
    for sentence in plain[:3]:
        goal.append(sentence)
        if _WANT.search(sentence):
            break
    else:
        goal = plain[:1]
    if not any(_WANT.search(s) for s in goal) and user.reason_for_call:
        reason = user.reason_for_call.strip()
        goal.append(f"I'm calling about this: {reason[:1].lower()}{reason[1:]}")
    facts = [s for s in [*plain, *split_sentences(user.known_info)] if not _META.search(s)]
    insist = re.search(r"\b(?:insist|ask|push back|complain)\b[^.;]*\bonce\b[^.;]*", user.instruction, re.I)
    insist_once = None
    if insist:
        insist_once = (
            "Is there really no exception?"
            if "exception" in insist.group(0).lower()
            else "That's not fair. Can't you make an exception?"
        )
    dont_want = []
    for m in re.finditer(r"\b(?:do not|don't) want to ([^.;]+)", user.instruction, re.I):
        phrase = to_first_person(m.group(1).strip())
        tokens = [t for t in content_tokens(phrase) if t not in {"want", "any", "anything"}]
        if tokens:
            # The action and its object ("change ... plan"): a proposal naming both is one the user refuses.
            dont_want.append((phrase[:1].lower() + phrase[1:], tuple(dict.fromkeys([tokens[0], tokens[-1]]))))
    opening_ids = []
    for slot in ("user_id", "reservation_id", "order_id", "phone"):
        value = _extract_one(slot, user.known_info)
        if value:
            opening_ids.append(_SLOT_PHRASES[slot].format(value))
    return Scenario(
        goal=tuple(ensure_period(to_first_person(s)) if not s.startswith("I'm calling") else s for s in goal),
        facts=tuple(ensure_period(to_first_person(s)) for s in facts),
        sources=(user.known_info, user.instruction, user.reason_for_call),
        unknown=user.unknown_info,
        insist_once=insist_once,
        dont_want=tuple(dont_want),
        opening_ids=tuple(opening_ids),
    )


def scenario(task: pb.Task) -> Scenario:
    return _scenario(task.user.SerializeToString(deterministic=True))


# ---------------------------------------------------------------------------------------------------------------
# Composing the user's turn
# ---------------------------------------------------------------------------------------------------------------

_GREETINGS = ("Hi!", "Hello!", "Hi there!")
_YES = ("Yes, please go ahead.", "Yes, please.", "Yes, go ahead.")
_THANKS = ("Thank you, that's all I needed.", "Great, thanks for your help.", "Perfect, thank you!")
_ACCEPT = ("I understand. Thanks anyway.", "Okay, I see. Thank you.", "Alright, I understand.")


@dataclass
class Reply:
    """What the procedural user decided; turned into a pb.UserTurn by the policy."""

    content: str = ""
    tool_calls: list[PlannedCall] = field(default_factory=list)
    stop: us.StopReason.ValueType = us.STOP_REASON_UNSPECIFIED

    def turn(self) -> us.UserTurn:
        calls = [
            pb.ToolCall(name=c.tool.name, arguments_json=json.dumps(c.arguments), side=pb.TOOL_SIDE_USER)
            for c in self.tool_calls
        ]
        content = self.content
        if self.stop != us.STOP_REASON_UNSPECIFIED:
            token = TRANSFER_TOKEN if self.stop == us.STOP_REASON_TRANSFERRED else STOP_TOKEN
            content = f"{content} {token}".strip()
        return us.UserTurn(
            content=content, tool_calls=calls, stop=self.stop != us.STOP_REASON_UNSPECIFIED, stop_reason=self.stop
        )


def respond(
    task: pb.Task, domain: Domain | None, history: Sequence[pb.Message], event: Event, rng: random.Random
) -> Reply:
    """The procedural user's next move after `history` (see the module docstring)."""
    sc = scenario(task)
    last = max((i for i, m in enumerate(history) if m.role == pb.ROLE_ASSISTANT), default=-1)
    if last < 0:
        if event == "open" or not history:
            return Reply(" ".join([rng.choice(_GREETINGS), *sc.goal, *_missing_ids(sc)]))
        return Reply("Hello? Is anyone there?")
    agent_text = history[last].content
    before, since = history[:last], history[last + 1 :]
    calls_made = [c for m in since if m.role == pb.ROLE_USER for c in m.tool_calls]
    results = [m.tool_result for m in since if m.role == pb.ROLE_TOOL]

    if not calls_made:
        if STOP_TOKEN in agent_text:
            return Reply(rng.choice(_THANKS), stop=us.STOP_REASON_GOAL_MET)
        if agent_transferred(agent_text) and not _offers_transfer(agent_text):
            return Reply(stop=us.STOP_REASON_TRANSFERRED)

    known = _known_texts(sc, before)
    device = plan_device_actions(agent_text, domain)
    lookups = [] if device else _lookup_plan(agent_text, sc, domain, known)
    plan = device or lookups
    if len(calls_made) < len(plan):
        return Reply(tool_calls=[plan[len(calls_made)]])
    if device:
        return Reply(_report(domain, calls_made, results))
    known_now = [*known, *(r.content for r in results)]
    return _answer(agent_text, sc, before, known_now, rng)


def _missing_ids(sc: Scenario) -> list[str]:
    said = " ".join(sc.goal)
    return [phrase for phrase in sc.opening_ids if phrase.split(" is ")[-1].rstrip(".") not in said]


def _known_texts(sc: Scenario, history: Sequence[pb.Message]) -> list[str]:
    results = [m.tool_result.content or m.content for m in history if m.role == pb.ROLE_TOOL]
    return [*sc.sources, *results]


def _report(domain: Domain | None, calls: Sequence[pb.ToolCall], results: Sequence[pb.ToolResult]) -> str:
    by_id = {r.call_id: r for r in results}
    parts = []
    for call in calls:
        result = by_id.get(call.id)
        if result is None:
            continue
        text = flatten(result.content) or "(nothing)"
        tool = domain.tool(call.name) if domain is not None else None
        if result.error:
            parts.append(f"That didn't work: {text}")
        elif tool is not None and tool.kind is ToolKind.READ:
            parts.append(f"It says: {text}")
        else:
            parts.append(f"Done. {text}")
    return " ".join(parts) or "Done."


def _questions(text: str) -> list[tuple[str, str]]:
    """(question, the sentence before it) for every question or request sentence of the agent's message."""
    sentences = split_sentences(text)
    return [(s, sentences[i - 1] if i else "") for i, s in enumerate(sentences) if _is_question(s)]


def _asked_slots(question: str, previous: str) -> list[list[str]]:
    """Slot groups asked for, as alternatives: "email, or name and zip" -> [["email"], ["name", "zip"]]."""
    low = _lower(question)
    groups: list[list[str]] = []
    for chunk in re.split(r"\bor\b", low):
        names = [s.name for s in SLOTS if s.asked.search(chunk)]
        if names:
            groups.append(sorted(set(names), key=names.index))
    where = re.search(r"\bwhere would you like (?:it|them|that|the refund|the money)\b", low)
    if not groups and where and re.search(r"\brefund|\bpayment\b|\bcard\b", _lower(previous)):
        groups.append(["payment"])
    return groups


def _lookup_plan(text: str, sc: Scenario, domain: Domain | None, known: Sequence[str]) -> list[PlannedCall]:
    """User-tool calls to find a fact the agent asks for that the user does not know but can look up."""
    if domain is None or not domain.user_tools:
        return []
    for question, previous in _questions(text):
        for group in _asked_slots(question, previous):
            missing = [s for s in group if extract_slot(s, known) is None]
            if not missing:
                break  # this alternative is answerable as it is
            for slot in missing:
                label = next(s.label for s in SLOTS if s.name == slot)
                for hint in split_sentences(sc.unknown):
                    if overlap(content_tokens(label), content_tokens(hint)) >= len(content_tokens(label)):
                        plan = plan_device_actions(hint, domain, relaxed=True)
                        if plan:
                            return plan[:1]
    return []


def _answer(
    agent_text: str, sc: Scenario, before: Sequence[pb.Message], known: Sequence[str], rng: random.Random
) -> Reply:
    sentences = split_sentences(agent_text)
    if not sentences:
        return Reply("Hello? Are you still there?")
    low_text = _lower(agent_text)
    if "?" not in agent_text and _WAITING.search(low_text) and not _COMPLETION.search(low_text):
        return Reply("Okay, thanks.")
    refused = agent_refused(agent_text)
    strongly_refused = bool(_STRONG_REFUSAL.search(_lower(agent_text)))
    questions = [(q, p) for q, p in _questions(agent_text) if not _CLOSING.search(_lower(q))]

    answers: list[str] = []
    for question, previous in questions:
        low = _lower(question)
        if _is_confirmation(question) and (_TRANSFER_WORDS.search(low) or _TRANSFER_WORDS.search(_lower(previous))):
            declined = _declined(sc, "be transferred to a human agent")
            if declined:
                return Reply(f"No, I don't want to {declined}.", stop=us.STOP_REASON_GOAL_UNACHIEVABLE)
            answers.append("Yes, please transfer me.")
            continue
        groups = _asked_slots(question, previous)
        if groups:
            # Details beyond the facts asked for ("any checked bags or insurance, and how will you pay?").
            extra = _retrieve(question, sc, exclude=_slot_words(groups), minimum=2)
            answers += [*([extra] if extra else []), *_slot_answers(groups, known, sc)]
        if _is_confirmation(question):
            if strongly_refused:
                # The agent cannot do what was asked and offers something else: the user wants only their goal.
                return Reply(f"No, thank you. {rng.choice(_ACCEPT)}", stop=us.STOP_REASON_GOAL_UNACHIEVABLE)
            answers.append(_confirm(question, agent_text, sc, rng))
        elif not groups:
            verb, _ = _action_words(question)
            answers.append("I'm not sure how to do that." if verb is not None else _retrieve_or_goal(question, sc))
    if answers:
        return Reply(" ".join(_dedupe(answers)))

    if refused:
        if sc.insist_once and not any(m.role == pb.ROLE_ASSISTANT and agent_refused(m.content) for m in before):
            return Reply(sc.insist_once)
        return Reply(rng.choice(_ACCEPT), stop=us.STOP_REASON_GOAL_UNACHIEVABLE)
    return Reply(rng.choice(_THANKS), stop=us.STOP_REASON_GOAL_MET)


def _slot_answers(groups: Sequence[Sequence[str]], known: Sequence[str], sc: Scenario) -> list[str]:
    values = {slot: extract_slot(slot, known) for group in groups for slot in group}
    if "reason" in values and not values["reason"]:
        values["reason"] = " ".join(sc.goal)  # no "because ...": the goal says why
    chosen = next((g for g in groups if all(values[s] for s in g)), None)
    if chosen is not None:
        return [_SLOT_PHRASES[s].format(values[s]) for s in chosen]
    out = [_SLOT_PHRASES[s].format(v) for s, v in values.items() if v]
    missing = [next(x.label for x in SLOTS if x.name == s) for s, v in values.items() if not v]
    if missing and not out:
        out.append(f"I'm sorry, I don't have my {' or '.join(missing)} at hand.")
        if set(values) <= _IDENTITY:
            # Offer what the user can identify themselves with instead.
            other = next(((s, v) for s in _IDENTITY_ORDER if s not in values and (v := extract_slot(s, known))), None)
            if other is not None:
                out.append(_SLOT_PHRASES[other[0]].format(other[1]))
    return out


_IDENTITY_ORDER = ("email", "user_id", "phone", "name", "zip")
_IDENTITY = frozenset({*_IDENTITY_ORDER, "dob", "customer_id"})


def _declined(sc: Scenario, proposal: str) -> str | None:
    proposal_tokens = content_tokens(proposal)
    for phrase, tokens in sc.dont_want:
        if all(any(tokens_match(t, p) for p in proposal_tokens) for t in tokens):
            return phrase
    return None


def _confirm(question: str, agent_text: str, sc: Scenario, rng: random.Random) -> str:
    proposals = [s for s in split_sentences(agent_text) if re.search(r"\bi(?:'ll| will| would|'d| can)\b", _lower(s))]
    declined = _declined(sc, " ".join([*proposals, question]))
    if declined:
        return f"No, I don't want to {declined}."
    if re.search(r"\b(?:only|everything|all)\b", _lower(question)):
        return "Yes, that's all. Please go ahead."
    return rng.choice(_YES)


def _slot_words(groups: Sequence[Sequence[str]]) -> frozenset[str]:
    labels = [s.label for s in SLOTS if any(s.name in g for g in groups)]
    return frozenset(t for label in labels for t in content_tokens(label))


_GENERIC = frozenset({"like", "want", "would", "need", "help", "give", "get", "make", "first", "today", "provide"})


def _retrieve(question: str, sc: Scenario, *, exclude: frozenset[str] = frozenset(), minimum: int = 1) -> str | None:
    """The scenario fact sentence sharing the most words with `question` (at least `minimum`)."""
    query = [t for t in content_tokens(question) if t not in _GENERIC and t not in exclude]
    best: tuple[int, int] | None = None
    for i, fact in enumerate(sc.facts):
        score = overlap(query, content_tokens(fact))
        if score >= minimum and (best is None or score > best[0]):
            best = (score, i)
    return sc.facts[best[1]] if best is not None else None


def _retrieve_or_goal(question: str, sc: Scenario) -> str:
    found = _retrieve(question, sc)
    if found is not None:
        return found
    if re.search(r"\byour\b", _lower(question)):
        return "I'm not sure, I don't have that information."
    return " ".join(sc.goal)


def _dedupe(answers: Sequence[str]) -> list[str]:
    """Answers without repeats, nor slot answers whose value an earlier answer already gave."""
    out: list[str] = []
    for answer in answers:
        if answer.startswith("Please use my "):
            value = answer.removeprefix("Please use my ").rstrip(".")
        else:
            value = answer.split(" is ", 1)[1].rstrip(".") if " is " in answer else ""
        if answer in out or (value and any(value in prior for prior in out)):
            continue
        out.append(answer)
    return out
