"""Mutation testing for checkers: perturb a task's gold trajectory and count the mutants the checker rejects.

A checker is only as good as the wrong trajectories it refuses. `score_task` replays the gold trajectory
(it must earn reward 1) and a set of mutants, each in a fresh `EnvSession`, and evaluates every one with the
task's own checker; a mutant is *killed* when its reward is below 1. The operators:

  drop_write               remove one successful WRITE call (one mutant per write)
  change_argument          change one argument of a write to a plausible, schema-valid different value
                           (another id from the state, another enum member, +1, an edited string)
  add_forbidden_write      append the checker's forbidden actions, or else a plausible extra write
  skip_required_message    remove one communicate_info string from the assistant's text
  reorder_dependent_calls  swap two writes whose order changes the outcome

Every choice is drawn from a `random.Random` seeded by (seed, operator), so a seed always gives the same
mutants. Mutants a data checker could never tell apart from the gold trajectory are discarded (see
`_equivalent`): every mutant counted differs from the gold trajectory in something a checker can observe
(the calls made, the text said, or the final state).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import ArgumentError, Domain, DomainState, Tool, ToolKind, canonical_json
from eigenloop.env.session import EnvSession, execute
from eigenloop.protocol import SIDE_TO_PB, arguments_of

OPERATORS = (
    "drop_write",
    "change_argument",
    "add_forbidden_write",
    "skip_required_message",
    "reorder_dependent_calls",
)
# Replacement values tried (each replayed on a copy of the state) per argument before settling for the best
# one seen (see `_trial`).
MAX_TRIES = 6
# Pairs of writes replayed in swapped order, nearest pairs first.
MAX_REORDER_PAIRS = 20
# Write tools tried when inventing an extra write for a trajectory that has none.
MAX_EXTRA_TOOLS = 8
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Trajectory:
    """What an agent did: its tool calls in order, and the text messages (assistant and user) it exchanged.

    A plain value; the protobuf messages inside are never mutated here, treat them as read-only.
    """

    calls: tuple[pb.ToolCall, ...] = ()
    messages: tuple[pb.Message, ...] = ()


@dataclass(frozen=True)
class Mutant:
    operator: str
    description: str
    trajectory: Trajectory


@dataclass(frozen=True)
class MutationReport:
    task_id: str
    gold_reward: float
    mutants: int
    killed: int
    survivors: list[Mutant] = field(default_factory=list)

    @property
    def gold_passed(self) -> bool:
        return self.gold_reward >= 1.0

    @property
    def score(self) -> float:
        """killed / mutants, with two edge cases.

        0.0 when the gold trajectory itself fails: such a checker "kills" every mutant because it rejects
        everything, so its kills say nothing. 1.0 when no mutant could be made (and gold passes): no operator
        found a perturbation the checker accepts, and a task must not be penalised for the operators having
        nothing to perturb (in practice rare: add_forbidden_write almost always yields one).
        """
        if not self.gold_passed:
            return 0.0
        if self.mutants == 0:
            return 1.0
        return self.killed / self.mutants


def overall_score(reports: Sequence[MutationReport]) -> float:
    """The share of all mutants killed (tasks weighted by their mutant count, failing-gold tasks kill none)."""
    total = sum(r.mutants for r in reports)
    if total == 0:
        return min((r.score for r in reports), default=1.0)
    return sum(r.score * r.mutants for r in reports) / total


# ---------------------------------------------------------------------------------------------- gold


def gold_trajectory(task: pb.Task) -> Trajectory:
    """The task's reference dialogue when it has one; else its checker's gold actions plus one assistant
    message stating every communicate_info string."""
    if task.reference_dialogue:
        calls: list[pb.ToolCall] = []
        messages: list[pb.Message] = []
        for message in task.reference_dialogue:
            for c in message.tool_calls:
                side = c.side
                if message.role == pb.ROLE_USER and side == pb.TOOL_SIDE_UNSPECIFIED:
                    side = pb.TOOL_SIDE_USER  # a call in a user turn is the user's own tool call
                calls.append(pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json, side=side))
            if message.role in (pb.ROLE_ASSISTANT, pb.ROLE_USER) and message.content:
                messages.append(pb.Message(role=message.role, content=message.content))
        return Trajectory(tuple(calls), tuple(messages))
    calls = [_copy_call(c) for c in task.checker.gold_actions]
    infos = list(task.checker.communicate_info)
    said = (pb.Message(role=pb.ROLE_ASSISTANT, content="To sum up: " + "; ".join(infos) + "."),) if infos else ()
    return Trajectory(tuple(calls), said)


# ---------------------------------------------------------------------------------------------- scoring


def replay(domain: Domain, task: pb.Task, trajectory: Trajectory, *, env_seed: int = 0) -> EnvSession:
    """A fresh session for `task` with every call of `trajectory` executed in order."""
    session = EnvSession(domain, task=task, seed=env_seed)
    for call in trajectory.calls:
        session.call(call)
    return session


def evaluate_trajectory(domain: Domain, task: pb.Task, trajectory: Trajectory, *, env_seed: int = 0) -> pb.Reward:
    session = replay(domain, task, trajectory, env_seed=env_seed)
    return session.evaluate(trajectory.messages, task.checker)


def score_task(domain: Domain, task: pb.Task, seed: int = 0, *, env_seed: int = 0) -> MutationReport:
    """Replay the gold trajectory and every mutant in fresh sessions and evaluate each with the task's checker."""
    gold = gold_trajectory(task)
    gold_reward = evaluate_trajectory(domain, task, gold, env_seed=env_seed).value
    made = mutants(domain, task, gold, rng_seed=seed, env_seed=env_seed)
    survivors = [m for m in made if evaluate_trajectory(domain, task, m.trajectory, env_seed=env_seed).value >= 1.0]
    return MutationReport(
        task_id=task.id,
        gold_reward=gold_reward,
        mutants=len(made),
        killed=len(made) - len(survivors),
        survivors=survivors,
    )


# ---------------------------------------------------------------------------------------------- mutants


def mutants(
    domain: Domain, task: pb.Task, trajectory: Trajectory, rng_seed: int = 0, *, env_seed: int = 0
) -> list[Mutant]:
    """Every operator's mutants of `trajectory`, in operator order, without duplicates or equivalents."""
    ctx = _Context.build(domain, task, trajectory, env_seed)
    raw: list[Mutant] = []
    for name, operator in _OPERATORS.items():
        raw.extend(operator(ctx, random.Random(f"{rng_seed}:{name}")))
    # Equivalence, in two steps. (1) Syntactic: a mutant whose key (calls as (name, canonical arguments,
    # side) in order, messages as (role, content)) equals the gold trajectory's or an earlier mutant's is
    # dropped. (2) Semantic: when a mutant has the same messages and the same *set* of calls as the gold
    # trajectory, no data checker component can see a difference except through the final state (ACTION
    # tests only the presence of calls, COMMUNICATE only the assistant text, STATE and ASSERTION only the
    # final state); so we replay it and drop it when its final state hash equals the gold replay's.
    seen = {_trajectory_key(trajectory)}
    kept: list[Mutant] = []
    for m in raw:
        key = _trajectory_key(m.trajectory)
        if key in seen:
            continue
        seen.add(key)
        if _equivalent(ctx, m.trajectory):
            continue
        kept.append(m)
    return kept


def _equivalent(ctx: _Context, mutant: Trajectory) -> bool:
    if _messages_key(mutant.messages) != _messages_key(ctx.trajectory.messages):
        return False
    if {_call_key(c) for c in mutant.calls} != {_call_key(c) for c in ctx.trajectory.calls}:
        return False
    key = _trajectory_key(mutant)
    if key not in ctx.replayed:  # reorder_dependent_calls already asked: replay each trajectory once
        ctx.replayed[key] = replay(ctx.domain, ctx.task, mutant, env_seed=ctx.env_seed).state.hash()
    return ctx.replayed[key] == ctx.final_hash


@dataclass
class _Context:
    """What the operators share: the gold replay (results, state before and state hash after each write,
    final state) and an index of the ids found in the initial state."""

    domain: Domain
    task: pb.Task
    trajectory: Trajectory
    env_seed: int
    results: list[pb.ToolResult]
    before: dict[int, DomainState]
    after: dict[int, str]
    final: DomainState
    final_hash: str
    ids: _IdIndex
    replayed: dict[TrajectoryKey, str] = field(default_factory=dict)  # final state hash of replayed mutants

    @classmethod
    def build(cls, domain: Domain, task: pb.Task, trajectory: Trajectory, env_seed: int) -> _Context:
        session = EnvSession(domain, task=task, seed=env_seed)
        ids = _IdIndex.of(session.state.to_dict())
        before: dict[int, DomainState] = {}
        after: dict[int, str] = {}
        for i, call in enumerate(trajectory.calls):
            write = _is_write(domain, call)
            if write:
                before[i] = session.state.copy()
            session.call(call)
            if write:
                after[i] = session.state.hash()
        results = [e.result for e in session.log]
        final = session.state
        return cls(domain, task, trajectory, env_seed, results, before, after, final, final.hash(), ids)

    def writes(self) -> list[int]:
        return [i for i, c in enumerate(self.trajectory.calls) if _is_write(self.domain, c)]

    def context_values(self) -> dict[str, Any]:
        """Argument values the trajectory already uses, by name (the scenario's entities): last one wins."""
        values: dict[str, Any] = {}
        for call in self.trajectory.calls:
            values.update(arguments_of(call))
        return values

    def with_calls(self, calls: Sequence[pb.ToolCall]) -> Trajectory:
        return Trajectory(tuple(calls), self.trajectory.messages)


# drop_write ------------------------------------------------------------------------------------------


def _drop_write(ctx: _Context, rng: random.Random) -> Iterator[Mutant]:
    calls = ctx.trajectory.calls
    for i in ctx.writes():
        if ctx.results[i].error:
            continue  # a failed write changed nothing: dropping it is not a perturbation of the outcome
        yield Mutant("drop_write", f"dropped {_fmt_call(calls[i])}", ctx.with_calls(calls[:i] + calls[i + 1 :]))


# change_argument -------------------------------------------------------------------------------------


def _change_argument(ctx: _Context, rng: random.Random) -> Iterator[Mutant]:
    calls = ctx.trajectory.calls
    for i in ctx.writes():
        call = calls[i]
        tool = ctx.domain.tool(call.name)
        assert tool is not None  # _is_write found it
        args = arguments_of(call)
        for name in args:
            changed = _change_one(ctx, tool, call, args, name, i, rng)
            if changed is None:
                continue
            new_call, path, old, new, rank = changed

            yield Mutant(
                "change_argument",
                f"changed {call.name} {path}: {_short(old)} -> {_short(new)}{RANK_NOTES.get(rank, '')}",
                ctx.with_calls((*calls[:i], new_call, *calls[i + 1 :])),
            )


def _change_one(
    ctx: _Context,
    tool: Tool,
    call: pb.ToolCall,
    args: dict[str, Any],
    name: str,
    index: int,
    rng: random.Random,
) -> tuple[pb.ToolCall, str, Any, Any, int] | None:
    """Replace one leaf of argument `name` of the call at `index`, preferring a value that validates, makes
    the call succeed, and leaves a different state than the gold call did (the best of MAX_TRIES values)."""
    root = tool.json_schema
    schema = root.get("properties", {}).get(name, {})
    leaves = list(_leaves(args[name], schema, root, (name,), name))
    rng.shuffle(leaves)
    best: tuple[pb.ToolCall, str, Any, Any, int] | None = None
    tries = 0
    for path, old, leaf_schema, leaf_name in leaves:
        for new in _candidates(ctx.ids, old, leaf_schema, leaf_name, rng):
            new_call = _with_arguments(call, _replace(args, path, new))
            rank = _trial(ctx.domain, tool, ctx.before[index], new_call, ctx.after[index])
            if best is None or rank > best[4]:
                best = (new_call, _fmt_path(path), old, new, rank)
            tries += 1
            if rank == CHANGES_STATE or tries >= MAX_TRIES:
                return best
    return best


def _candidates(ids: _IdIndex, value: Any, schema: dict[str, Any], name: str, rng: random.Random) -> list[Any]:
    """Plausible replacement values of the same type, best first (never `value` itself)."""
    if "enum" in schema:
        members = [m for m in schema["enum"] if m != value]
        rng.shuffle(members)
        return members
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int | float):
        step = 1 if isinstance(value, int) else 1.0
        return [value + step, value - step]
    if isinstance(value, str):
        return _dedupe([*ids.others(value, name, rng), *_edited_strings(value)], value)
    return []  # null: nothing plausible to put instead without guessing at the type


def _edited_strings(value: str) -> list[str]:
    out = []
    digits = [i for i, ch in enumerate(value) if ch.isdigit()]
    if digits:  # "255 Elm Street" -> "256 Elm Street", "2024-05-01" -> "2024-05-02": same shape, other value
        i = digits[-1]
        out.append(value[:i] + str((int(value[i]) + 1) % 10) + value[i + 1 :])
    out.append(f"{value} (changed)" if value else "changed")
    if value:  # last resort for tight length limits: same length, last character changed
        out.append(value[:-1] + ("x" if value[-1] != "x" else "y"))
    return out


# add_forbidden_write ---------------------------------------------------------------------------------


def _add_forbidden_write(ctx: _Context, rng: random.Random) -> Iterator[Mutant]:
    calls = ctx.trajectory.calls
    forbidden = list(ctx.task.checker.forbidden_actions)
    if forbidden:
        for match in forbidden:
            call = _forbidden_call(ctx, match, rng)
            yield Mutant(
                "add_forbidden_write",
                f"added forbidden {_fmt_call(call)}",
                ctx.with_calls((*calls, call)),
            )
        return
    # No forbidden actions: a write the scenario should not contain. First repeat each write tool the
    # trajectory uses on a different entity; when there is none, call another write tool of the domain.
    # Unlike forbidden actions (whose mere attempt is the fault), an invented write must succeed and change
    # the final state: a refused or no-op extra call is not a wrong outcome a checker ought to reject.
    made = False
    done: set[str] = set()
    for i in ctx.writes():
        call = calls[i]
        if call.name in done or ctx.results[i].error:
            continue
        done.add(call.name)
        extra = _repeat_elsewhere(ctx, call, rng)
        if extra is not None:
            made = True
            yield Mutant(
                "add_forbidden_write",
                f"added {_fmt_call(extra)} (repeats {call.name} on another entity)",
                ctx.with_calls((*calls, extra)),
            )
    if made:
        return
    extra = _other_write(ctx, rng)
    if extra is not None:
        yield Mutant("add_forbidden_write", f"added {_fmt_call(extra)}", ctx.with_calls((*calls, extra)))


def _forbidden_call(ctx: _Context, match: pb.ActionMatch, rng: random.Random) -> pb.ToolCall:
    """The forbidden action as a call; its arguments completed from the scenario when they do not validate
    (a NAME_ONLY or LISTED match may carry few or none), so the call really acts."""
    tool = ctx.domain.tool(match.call.name)
    if tool is None:
        return _copy_call(match.call)
    side = SIDE_TO_PB[tool.side]
    call = pb.ToolCall(name=match.call.name, arguments_json=match.call.arguments_json or "{}", side=side)
    if _valid(tool, call):
        return call
    args = _complete_arguments(ctx, tool, arguments_of(match.call), rng)
    return pb.ToolCall(name=tool.name, arguments_json=json.dumps(args), side=side)


def _repeat_elsewhere(ctx: _Context, call: pb.ToolCall, rng: random.Random) -> pb.ToolCall | None:
    """`call` with one of its id arguments pointing at another entity, changing the final state."""
    tool = ctx.domain.tool(call.name)
    assert tool is not None
    args = arguments_of(call)
    tries = 0
    for name in reversed(list(args)):  # the last id is usually the most specific entity (line, not customer)
        value = args[name]
        if not isinstance(value, str) or not ctx.ids.is_id(value, name):
            continue
        for other in ctx.ids.others(value, name, rng)[:MAX_TRIES]:
            new_call = _with_arguments(call, {**args, name: other})
            if _trial(ctx.domain, tool, ctx.final, new_call, ctx.final_hash) == CHANGES_STATE:
                return new_call
            tries += 1
            if tries >= MAX_TRIES:
                return None
    return None


def _other_write(ctx: _Context, rng: random.Random) -> pb.ToolCall | None:
    tools = [t for t in ctx.domain.tools if t.kind is ToolKind.WRITE]
    rng.shuffle(tools)
    for tool in tools[:MAX_EXTRA_TOOLS]:
        args = _complete_arguments(ctx, tool, {}, rng)
        call = pb.ToolCall(name=tool.name, arguments_json=json.dumps(args), side=SIDE_TO_PB[tool.side])
        if _trial(ctx.domain, tool, ctx.final, call, ctx.final_hash) == CHANGES_STATE:
            return call
    return None


def _complete_arguments(ctx: _Context, tool: Tool, given: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """`given` plus a plausible value for every missing required argument: the value the trajectory already
    used under that name (the scenario's entity), else one drawn from the state or the schema; when the
    scenario's values do not validate for this tool, drawn values throughout."""
    root = tool.json_schema
    known = ctx.context_values()
    missing = {
        name: schema
        for name, schema in root.get("properties", {}).items()
        if name not in given and name in root.get("required", [])
    }
    drawn = {name: _plausible(ctx.ids, name, schema, root, rng) for name, schema in missing.items()}
    scenario = {**given, **{name: known.get(name, drawn[name]) for name in missing}}
    if _valid(tool, pb.ToolCall(name=tool.name, arguments_json=json.dumps(scenario))):
        return scenario
    return {**given, **drawn}


def _plausible(ids: _IdIndex, name: str, schema: dict[str, Any], root: dict[str, Any], rng: random.Random) -> Any:
    s = _resolve(schema, root)
    if "enum" in s:
        return rng.choice(s["enum"])
    if "const" in s:
        return s["const"]
    if "default" in s:
        return s["default"]
    kind = s.get("type")
    if kind == "string":
        known = ids.values_named(name)
        return rng.choice(known) if known else "example"
    if kind == "integer":
        return min(max(1, int(s.get("minimum", 1))), int(s.get("maximum", 2**62)))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "array":
        count = int(s.get("minItems", 0))
        return [_plausible(ids, name, s.get("items", {}), root, rng) for _ in range(count)]
    if kind == "object":
        required = s.get("required", [])
        return {k: _plausible(ids, k, v, root, rng) for k, v in s.get("properties", {}).items() if k in required}
    return None


# skip_required_message -------------------------------------------------------------------------------


def _skip_required_message(ctx: _Context, rng: random.Random) -> Iterator[Mutant]:
    for info in _dedupe(list(ctx.task.checker.communicate_info), ""):
        needle = info.lower()
        messages: list[pb.Message] = []
        removed = False
        for m in ctx.trajectory.messages:
            if m.role != pb.ROLE_ASSISTANT or needle not in _said(m.content):
                messages.append(m)
                continue
            removed = True
            text = _redact(m.content, info)
            if text.replace(REDACTED, "").strip(" \t\n.,;:!?-"):  # else it said nothing more: drop it whole
                messages.append(pb.Message(role=m.role, content=text))
        if removed:
            yield Mutant(
                "skip_required_message",
                f"never said {info!r}",
                Trajectory(ctx.trajectory.calls, tuple(messages)),
            )


def _said(text: str) -> str:
    """Assistant text as the COMMUNICATE component reads it."""
    return text.lower().replace(",", "")


def _redact(text: str, info: str) -> str:
    """`text` without any occurrence the COMMUNICATE component would find: a case-insensitive cut first, then
    (for matches that only appear once commas are dropped) cuts in the normalised text until none is left."""
    out = re.sub(re.escape(info), REDACTED, text, flags=re.IGNORECASE)
    needle = info.lower()
    if needle not in _said(out):
        return out
    out = _said(out)
    while needle in out:  # each pass shortens the text, so this ends
        out = out.replace(needle, "")
    return out


# reorder_dependent_calls -----------------------------------------------------------------------------


def _reorder_dependent_calls(ctx: _Context, rng: random.Random) -> Iterator[Mutant]:
    calls = ctx.trajectory.calls
    pairs = sorted(combinations(ctx.writes(), 2), key=lambda p: (p[1] - p[0], p[0]))
    tried = 0
    for a, b in pairs:
        if _call_key(calls[a]) == _call_key(calls[b]):
            continue  # swapping two identical calls changes nothing
        # The pair depends on each other when both touch the same entity, or when the later call fails or
        # answers differently run first (e.g. it acts on something the earlier call creates). Swapping two
        # independent writes would only reorder them relative to the calls in between, which the pairs
        # actually involved already cover.
        shared = _entities(ctx, calls[a]) & _entities(ctx, calls[b])
        if not shared and not _behaves_differently_first(ctx, a, b):
            continue
        tried += 1
        if tried > MAX_REORDER_PAIRS:
            return
        swapped = list(calls)
        swapped[a], swapped[b] = swapped[b], swapped[a]
        mutant = ctx.with_calls(swapped)
        # And the swap must change the outcome: same calls and messages, so only the final state can differ
        # (exactly the semantic equivalence test; a commuting pair is dropped here).
        if _equivalent(ctx, mutant):
            continue
        yield Mutant(
            "reorder_dependent_calls",
            f"swapped {_fmt_call(calls[a])} and {_fmt_call(calls[b])}",
            mutant,
        )


def _entities(ctx: _Context, call: pb.ToolCall) -> set[str]:
    """The ids a call's arguments name (string leaves found as ids in the state)."""
    tool = ctx.domain.tool(call.name)
    root = tool.json_schema if tool is not None else {}
    found: set[str] = set()
    for name, value in arguments_of(call).items():
        schema = root.get("properties", {}).get(name, {})
        for _, leaf, _, leaf_name in _leaves(value, schema, root, (name,), name):
            if isinstance(leaf, str) and ctx.ids.is_id(leaf, leaf_name):
                found.add(leaf)
    return found


def _behaves_differently_first(ctx: _Context, a: int, b: int) -> bool:
    """Whether call `b` run where call `a` ran (before it) fails or answers differently than it did."""
    result, _ = execute(ctx.domain, ctx.before[a].copy(), ctx.trajectory.calls[b])
    gold = ctx.results[b]
    return (result.error, result.content) != (gold.error, gold.content)


_OPERATORS = {
    "drop_write": _drop_write,
    "change_argument": _change_argument,
    "add_forbidden_write": _add_forbidden_write,
    "skip_required_message": _skip_required_message,
    "reorder_dependent_calls": _reorder_dependent_calls,
}
assert tuple(_OPERATORS) == OPERATORS


# ---------------------------------------------------------------------------------------------- ids


@dataclass
class _IdIndex:
    """Where ids live in a state: keys of tables (dicts whose values are all records) and string values of
    record fields. Used to swap an id for another existing one of the same kind."""

    tables: dict[str, list[str]] = field(default_factory=dict)  # concrete path -> keys
    patterns: dict[str, list[str]] = field(default_factory=dict)  # path with table keys as * -> concrete paths
    homes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key -> [(pattern, concrete path)]
    fields: dict[str, dict[str, None]] = field(default_factory=dict)  # field name -> its string values (ordered)

    @classmethod
    def of(cls, state: dict[str, Any]) -> _IdIndex:
        index = cls()
        index._walk(state, "", "", "")
        return index

    def _walk(self, node: Any, path: str, pattern: str, name: str) -> None:
        if isinstance(node, dict):
            if node and all(isinstance(v, dict) for v in node.values()):
                keys = [str(k) for k in node]
                self.tables[path] = keys
                self.patterns.setdefault(pattern, []).append(path)
                for k in keys:
                    self.homes.setdefault(k, []).append((pattern, path))
                for k, v in node.items():
                    self._walk(v, f"{path}.{k}", f"{pattern}.*", name)
            else:
                for k, v in node.items():
                    self._walk(v, f"{path}.{k}", f"{pattern}.{k}", str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                self._walk(v, f"{path}[{i}]", f"{pattern}[]", name)
        elif isinstance(node, str) and name:
            self.fields.setdefault(name, {})[node] = None

    def is_id(self, value: str, name: str) -> bool:
        """A table key, or a value of an id-named field (`order_id`, `line_ids`) in the state."""
        if value in self.homes:
            return True
        return name.endswith(("id", "ids")) and value in self._field(name)

    def values_named(self, name: str) -> list[str]:
        return list(self._field(name))

    def _field(self, name: str) -> dict[str, None]:
        for candidate in (name, name.removesuffix("s")):  # item_ids -> item_id
            if candidate in self.fields:
                return self.fields[candidate]
        return {}

    def others(self, value: str, name: str, rng: random.Random) -> list[str]:
        """Other values of the same kind as `value`, shuffled: when it is a table key, the sibling keys first
        (e.g. the other variants of the same product), then the keys of the same table elsewhere; otherwise
        the other values of the state's field named `name` (ids of records kept in lists, addresses, ...);
        [] when the state has neither."""
        out: list[str] = []
        for pattern, home in self.homes.get(value, []):
            siblings = [k for k in self.tables[home] if k != value]
            rng.shuffle(siblings)
            elsewhere = [k for p in self.patterns[pattern] if p != home for k in self.tables[p] if k != value]
            rng.shuffle(elsewhere)
            out += siblings + elsewhere
        if not out and value in self._field(name):
            out = [v for v in self._field(name) if v != value]
            rng.shuffle(out)
        return _dedupe(out, value)


# ---------------------------------------------------------------------------------------------- helpers


def _is_write(domain: Domain, call: pb.ToolCall) -> bool:
    tool = domain.tool(call.name)
    return tool is not None and tool.kind is ToolKind.WRITE


def _copy_call(call: pb.ToolCall) -> pb.ToolCall:
    return pb.ToolCall(id=call.id, name=call.name, arguments_json=call.arguments_json, side=call.side)


def _with_arguments(call: pb.ToolCall, args: dict[str, Any]) -> pb.ToolCall:
    return pb.ToolCall(name=call.name, arguments_json=json.dumps(args), side=call.side)


def _valid(tool: Tool, call: pb.ToolCall) -> bool:
    try:
        tool.parse_arguments(call.arguments_json)
    except ArgumentError:
        return False
    return True


# How good a candidate call is as a mutant, worst to best.
INVALID, FAILS, SAME_STATE, CHANGES_STATE = range(4)
RANK_NOTES = {INVALID: " (no schema-valid value found)", SAME_STATE: " (no value tried changed the state)"}


def _trial(domain: Domain, tool: Tool, state: DomainState, call: pb.ToolCall, reference_hash: str) -> int:
    """Run `call` on a copy of `state`: INVALID against the schema (the argument validator would catch it,
    not the checker), FAILS (the tool refuses it), SAME_STATE (succeeds but ends where `reference_hash`
    says the unmutated trajectory does) or CHANGES_STATE."""
    if not _valid(tool, call):
        return INVALID
    trial = state.copy()
    result, _ = execute(domain, trial, call)
    if result.error:
        return FAILS
    return SAME_STATE if trial.hash() == reference_hash else CHANGES_STATE


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref into $defs and take the non-null branch of an Optional's anyOf."""
    for _ in range(16):
        if "$ref" in schema:
            schema = root.get("$defs", {}).get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        elif "anyOf" in schema:
            branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
            schema = branches[0] if branches else {}
        else:
            break
    return schema


Path = tuple[str | int, ...]
TrajectoryKey = tuple[tuple[tuple[str, str, int], ...], tuple[tuple[int, str], ...]]


def _leaves(
    value: Any, schema: dict[str, Any], root: dict[str, Any], path: Path, name: str
) -> Iterator[tuple[Path, Any, dict[str, Any], str]]:
    """(path, value, schema, field name) of every scalar inside an argument value."""
    s = _resolve(schema, root)
    if isinstance(value, dict):
        props = s.get("properties", {})
        for k, v in value.items():
            yield from _leaves(v, props.get(k, {}), root, (*path, k), k)
    elif isinstance(value, list):
        items = s.get("items", {})
        for i, v in enumerate(value):
            yield from _leaves(v, items, root, (*path, i), name)
    else:
        yield path, value, s, name


def _replace(args: dict[str, Any], path: Path, new: Any) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(args))
    node: Any = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return copy


def _fmt_path(path: Path) -> str:
    out = str(path[0])
    for step in path[1:]:
        out += f"[{step}]" if isinstance(step, int) else f".{step}"
    return out


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt_call(call: pb.ToolCall) -> str:
    """`cancel_order(O10001, mistake)`: argument values only, each shortened."""
    args = arguments_of(call)
    text = f"{call.name}({', '.join(_short(v) for v in args.values())})"
    return text if len(text) <= 160 else text[:157] + "..."


def _dedupe(values: list[Any], exclude: Any) -> list[Any]:
    """`values` in order, each once, without `exclude` (all scalars, so hashable)."""
    return [v for v in dict.fromkeys(values) if v != exclude]


def _call_key(call: pb.ToolCall) -> tuple[str, str, int]:
    try:
        args = canonical_json(json.loads(call.arguments_json or "{}"))
    except json.JSONDecodeError:
        args = call.arguments_json
    side = pb.TOOL_SIDE_USER if call.side == pb.TOOL_SIDE_USER else pb.TOOL_SIDE_AGENT
    return call.name, args, int(side)


def _messages_key(messages: Sequence[pb.Message]) -> tuple[tuple[int, str], ...]:
    return tuple((int(m.role), m.content) for m in messages)


def _trajectory_key(t: Trajectory) -> TrajectoryKey:
    return tuple(_call_key(c) for c in t.calls), _messages_key(t.messages)
