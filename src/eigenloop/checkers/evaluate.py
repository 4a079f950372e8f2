"""Evaluate a data checker against an episode's final state, its tool calls and its messages.

Components (each computed whenever the checker has data for it; only those in the reward basis multiply
into the reward, the rest are diagnostics):
  STATE        final state hash == the hash of the state the gold actions produce from the same start
  ACTION       every required action was called, no forbidden action was
  COMMUNICATE  every required string appears in some assistant text (case-insensitive, commas removed)
  ASSERTION    every domain assertion function returns its expected value on the final state
Components that need a judge or a sandbox are reported unchecked and flag a checker error, never a pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from google.protobuf import json_format

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Domain, DomainState, ToolKind
from eigenloop.protocol import arguments_of, side_from_pb

MAX_DIFF_LINES = 20
# A reward is a product of components in [0, 1]: 1 up to float rounding is a success.
SUCCESS = 1.0 - 1e-6


def passed(trajectory: pb.Trajectory) -> bool:
    """Whether the episode earned the full reward (tau2's success)."""
    return trajectory.reward.value >= SUCCESS


@dataclass(frozen=True)
class Component:
    component: pb.RewardComponent.ValueType
    value: float
    detail: str
    checked: bool = True
    # The checker failed to run (crash, timeout, unknown function): the whole reward is void.
    error: bool = False


def evaluate_checker(
    domain: Domain,
    checker: pb.Checker,
    *,
    initial: pb.InitialState,
    seed: int,
    final_state: DomainState,
    calls: Sequence[pb.ToolCall],
    messages: Sequence[pb.Message],
) -> pb.Reward:
    final_hash = final_state.hash()
    gold = tuple(c.SerializeToString(deterministic=True) for c in checker.gold_actions)
    expected_hash, expected = _expected_state(domain, initial.SerializeToString(deterministic=True), seed, gold)
    matches = final_hash == expected_hash
    diff = [] if matches else final_state.diff(expected)
    components = [_state(matches, diff)]
    if checker.required_actions or checker.forbidden_actions:
        components.append(_actions(checker, calls))
    if checker.communicate_info:
        components.append(_communicate(checker.communicate_info, messages))
    if checker.assertions:
        components.append(_assertions(domain, checker.assertions, final_state))
    if checker.nl_assertions:
        components.append(Component(pb.REWARD_COMPONENT_NL_ASSERTION, 0.0, "no LLM judge configured", checked=False))
    if checker.python.source:
        components.append(_python(checker.python, final_state, messages))
    reward = combine(components, checker.reward_basis)
    reward.final_state_hash, reward.expected_state_hash = final_hash, expected_hash
    reward.state_diff = "\n".join(diff)
    return reward


def combine(components: Sequence[Component], reward_basis: Sequence[pb.RewardComponent.ValueType]) -> pb.Reward:
    """Multiply the components named in the basis (all of them when the basis is empty) into a Reward."""
    basis = set(reward_basis) or {c.component for c in components}
    reward = pb.Reward(value=1.0)
    for c in components:
        in_basis = c.component in basis
        reward.breakdown.append(
            pb.RewardBreakdownEntry(
                component=c.component, value=c.value, in_basis=in_basis, checked=c.checked, detail=c.detail
            )
        )
        if not in_basis:
            continue
        if c.error:
            reward.checker_error = True
        if not c.checked:
            reward.unchecked.append(c.component)
            continue
        reward.value *= c.value
        if c.value < 1.0 and not reward.failure_reason:
            reward.failure_reason = f"{pb.RewardComponent.Name(c.component)}: {c.detail}"
    for component in sorted(basis - {c.component for c in components}):
        # Named in the basis with nothing to check (e.g. COMMUNICATE with no strings): holds, as in tau2.
        name = pb.RewardComponent.Name(component)
        reward.breakdown.append(
            pb.RewardBreakdownEntry(
                component=component, value=1.0, in_basis=True, checked=True, detail=f"{name}: nothing required"
            )
        )
    if reward.checker_error:
        reward.value = 0.0
    return reward


@lru_cache(maxsize=4096)
def _expected_state(domain: Domain, initial: bytes, seed: int, gold: tuple[bytes, ...]) -> tuple[str, DomainState]:
    """The state the gold actions produce, cached per (task start, gold actions): gold replays run once."""
    from eigenloop.env.session import build_initial_state, execute  # env depends on checkers, not the reverse

    state = build_initial_state(domain, pb.InitialState.FromString(initial), seed)
    for raw in gold:
        call = pb.ToolCall.FromString(raw)
        tool = domain.tool(call.name)
        if tool is not None and tool.kind is ToolKind.WRITE:
            execute(domain, state, call)  # a failing gold write is skipped, as tau2 does
    return state.hash(), state


def _state(matches: bool, diff: Sequence[str]) -> Component:
    if matches:
        return Component(pb.REWARD_COMPONENT_STATE, 1.0, "final state matches the gold state")
    return Component(pb.REWARD_COMPONENT_STATE, 0.0, "final state differs from the gold state: " + "; ".join(diff[:1]))


def action_matches(expected: pb.ActionMatch, taken: pb.ToolCall) -> bool:
    """tau2's rule (name, then the compared arguments), plus the side when the expected call names one: a
    user's rejected attempt at an agent tool is not the agent doing it."""
    if expected.call.name != taken.name:
        return False
    if expected.call.side != pb.TOOL_SIDE_UNSPECIFIED and side_from_pb(expected.call.side) is not side_from_pb(
        taken.side
    ):
        return False
    if expected.match == pb.ARGUMENT_MATCH_NAME_ONLY:
        return True
    want, got = arguments_of(expected.call), arguments_of(taken)
    keys = list(expected.compare_args) if expected.match == pb.ARGUMENT_MATCH_LISTED else list(got)
    return all(want.get(k) == got.get(k) for k in keys)


def _describe(match: pb.ActionMatch) -> str:
    return f"{match.call.name}({match.call.arguments_json or ''})"


def _actions(checker: pb.Checker, calls: Sequence[pb.ToolCall]) -> Component:
    missing = [_describe(m) for m in checker.required_actions if not any(action_matches(m, c) for c in calls)]
    forbidden = [_describe(m) for m in checker.forbidden_actions if any(action_matches(m, c) for c in calls)]
    if not missing and not forbidden:
        return Component(pb.REWARD_COMPONENT_ACTION, 1.0, "required actions taken, no forbidden action")
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"forbidden {', '.join(forbidden)}"] if forbidden else []
    )
    return Component(pb.REWARD_COMPONENT_ACTION, 0.0, "; ".join(parts))


def unsaid(required: Sequence[str], messages: Sequence[pb.Message]) -> list[str]:
    """The required strings no assistant text contains (case-insensitive, commas removed)."""
    said = [m.content.lower().replace(",", "") for m in messages if m.role == pb.ROLE_ASSISTANT and m.content]
    return [info for info in required if not any(info.lower() in text for text in said)]


def _communicate(required: Sequence[str], messages: Sequence[pb.Message]) -> Component:
    missing = unsaid(required, messages)
    if missing:
        return Component(pb.REWARD_COMPONENT_COMMUNICATE, 0.0, f"never told the user: {', '.join(missing)}")
    return Component(pb.REWARD_COMPONENT_COMMUNICATE, 1.0, "required information communicated")


def _assertions(domain: Domain, assertions: Sequence[pb.StateAssertion], state: DomainState) -> Component:
    failed = []
    for a in assertions:
        fn = domain.assertions.get(a.function)
        if fn is None:
            return Component(
                pb.REWARD_COMPONENT_ASSERTION, 0.0, f"unknown assertion function {a.function!r}", error=True
            )
        try:
            got = fn(state, **json.loads(a.arguments_json or "{}"))
            expected = json.loads(a.expected_json or "true")
        except Exception as exc:
            return Component(pb.REWARD_COMPONENT_ASSERTION, 0.0, f"{a.function} could not run: {exc}", error=True)
        if got != expected:
            failed.append(a.description or f"{a.function}({a.arguments_json}) returned {got!r}, expected {expected!r}")
    if failed:
        return Component(pb.REWARD_COMPONENT_ASSERTION, 0.0, "; ".join(failed))
    return Component(pb.REWARD_COMPONENT_ASSERTION, 1.0, "all assertions hold")


def _python(checker: pb.PythonChecker, state: DomainState, messages: Sequence[pb.Message]) -> Component:
    from eigenloop.checkers.sandbox import SandboxLimits, run_python_checker

    limits = SandboxLimits(timeout_s=checker.timeout_s or SandboxLimits.timeout_s)
    dialogue = [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in messages]
    outcome = run_python_checker(checker.source, state.to_dict(), dialogue, limits)
    if outcome.value is None:
        return Component(pb.REWARD_COMPONENT_PYTHON, 0.0, f"python checker failed: {outcome.error}", error=True)
    return Component(pb.REWARD_COMPONENT_PYTHON, outcome.value, f"python checker returned {outcome.value:g}")


def diff_states(actual: Any, expected: Any, path: str = "", limit: int = MAX_DIFF_LINES) -> list[str]:
    """Readable differences, one line per changed leaf: `db.orders.O10001.status: 'pending' (expected 'cancelled')`."""
    lines: list[str] = []

    def walk(a: Any, e: Any, where: str) -> None:
        if len(lines) >= limit or a == e:
            return
        if isinstance(a, dict) and isinstance(e, dict):
            for key in sorted(set(a) | set(e), key=str):
                sub = f"{where}.{key}" if where else str(key)
                if key not in a:
                    lines.append(f"{sub}: missing (expected {json.dumps(e[key])[:80]})")
                elif key not in e:
                    lines.append(f"{sub}: unexpected {json.dumps(a[key])[:80]}")
                else:
                    walk(a[key], e[key], sub)
                if len(lines) >= limit:
                    return
        elif isinstance(a, list) and isinstance(e, list) and len(a) == len(e):
            for i, (x, y) in enumerate(zip(a, e, strict=True)):
                walk(x, y, f"{where}[{i}]")
        else:
            lines.append(f"{where or '(root)'}: {json.dumps(a)[:80]} (expected {json.dumps(e)[:80]})")

    walk(actual, expected, path)
    return lines
