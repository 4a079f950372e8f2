"""Why an episode failed, as a label a report can count: the first place where the agent departs from the task.

The checker says *that* an episode failed (state differs, an action is missing); a report on what a model gets
wrong needs *where*: which gold call the agent skipped, which argument it got wrong, whether it acted where the
task forbids it. `failure_kind` compares the agent's calls with the task's gold actions, in this order:

  "<tool>: forbidden"        the agent made a call the checker forbids (a write where the task wants a refusal)
  "<tool>: wrong <argument>" the agent called the tool, but this argument (the first that differs) is wrong
  "<tool>: <error kind>"     the agent made the gold call, but the environment refused it
  "malformed tool call"      a gold call is missing and the agent wrote a call nobody could parse
  "<tool>: not called"       a gold call the agent never made
  "not said: <info>"         every call right, but the reply lacks what the user had to be told
  "other: <component>"       anything else, by the first failed reward component

Labels name tools and argument keys only, never values, so episodes of different entities count together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from eigenloop.checkers.evaluate import action_matches
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Side
from eigenloop.protocol import arguments_of, side_from_pb

MALFORMED = "malformed tool call"


def failure_kind(task: pb.Task, trajectory: pb.Trajectory) -> str | None:
    """The label of the first departure from `task` in `trajectory`; None when its reward is 1."""
    if trajectory.reward.value >= 1.0:
        return None
    calls, malformed = _agent_calls(trajectory.messages)
    for match in task.checker.forbidden_actions:
        if any(action_matches(match, c.call) for c in calls if c.error is None):
            return f"{match.call.name}: forbidden"
    for gold in task.checker.gold_actions:
        if side_from_pb(gold.side) is not Side.USER:
            label = _departure(gold, calls, malformed)
            if label is not None:
                return label
    for entry in trajectory.reward.breakdown:
        if entry.in_basis and entry.value < 1.0:
            if entry.component == pb.REWARD_COMPONENT_COMMUNICATE:
                return "not said: " + ", ".join(task.checker.communicate_info)
            return "other: " + pb.RewardComponent.Name(entry.component).removeprefix("REWARD_COMPONENT_").lower()
    return "other: " + (trajectory.reward.failure_reason or "no reward")


def count_failures(pairs: Iterable[tuple[pb.Task, pb.Trajectory]]) -> Counter[str]:
    """How many scored episodes failed in each way (episodes the infrastructure dropped are not scored)."""
    counts: Counter[str] = Counter()
    for task, trajectory in pairs:
        if trajectory.status == pb.EPISODE_STATUS_INFRA_FAILED:
            continue
        label = failure_kind(task, trajectory)
        if label is not None:
            counts[label] += 1
    return counts


@dataclass(frozen=True)
class _Made:
    call: pb.ToolCall
    error: str | None
    """How the environment refused the call ("invalid arguments", "tool failed"); None when it ran."""


def _agent_calls(messages: Iterable[pb.Message]) -> tuple[list[_Made], bool]:
    """The agent's calls with their outcome, and whether it wrote a call that could not be parsed at all.

    Results follow their turn's calls in order (call ids are only unique within a turn); a result with no call
    waiting answers an unparsable one."""
    made: list[_Made] = []
    waiting: list[pb.ToolCall] = []
    malformed = False
    for message in messages:
        if message.role != pb.ROLE_TOOL:
            waiting = list(message.tool_calls)
            continue
        if not waiting:
            malformed = True
            continue
        call, result = waiting.pop(0), message.tool_result
        if side_from_pb(call.side) is Side.USER:
            continue
        kind = pb.ToolErrorKind.Name(result.error_kind).removeprefix("TOOL_ERROR_KIND_").lower().replace("_", " ")
        made.append(_Made(call, kind if result.error else None))
    return made, malformed


def _departure(gold: pb.ToolCall, calls: list[_Made], malformed: bool) -> str | None:
    """None when the agent made `gold` (same name and arguments) and it ran; else how it departed."""
    want = arguments_of(gold)
    same_name = [c for c in calls if c.call.name == gold.name]
    exact = [c for c in same_name if all(arguments_of(c.call).get(k) == v for k, v in want.items())]
    if any(c.error is None for c in exact):
        return None
    if exact:
        return f"{gold.name}: {exact[-1].error}"
    if same_name:
        got = arguments_of(same_name[-1].call)
        return f"{gold.name}: wrong {next(k for k, v in want.items() if got.get(k) != v)}"
    return MALFORMED if malformed else f"{gold.name}: not called"
