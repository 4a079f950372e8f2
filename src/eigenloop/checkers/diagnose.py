"""Why an episode failed, as a label a report can count: the first place where the agent departs from the task.

The checker says *that* an episode failed (state differs, an action is missing); a report on what a model gets
wrong needs *where*: which gold call the agent skipped, which argument it got wrong, whether it acted where the
task forbids it. `failure_kind` checks, in this order (gold calls in the order of the task's gold actions, not of
the episode):

  "<tool>: forbidden"        the agent made a call the checker forbids (a write where the task wants a refusal),
                             whether or not the environment let it run
  then, for each gold call of the agent in turn:
  "<tool>: <error kind>"     the agent made the gold call, but the environment refused it ("tool failed")
  "<tool>: wrong <argument>" the agent called the tool, but this argument (the first that differs) is wrong
  "malformed tool call"      the agent never called the tool, and wrote a call nobody could parse
  "<tool>: not called"       the agent never called the tool
  then, by the first failed reward component that was checked:
  "not said: <info>"         what the user had to be told and was not (values with digits shown as <value>)
  "other: <component>"       any other component; "other: checker error" when the checker itself failed

Labels name tools, argument keys and fixed words, never ids or amounts, so episodes of different entities count
together.

`mistake_kind` sorts labels by the kind of mistake: a wrong value (a free-form argument: an id, an address, an
amount, which the agent must carry over from the dialogue or compute) or a wrong choice (an argument from a fixed
set of options, a forbidden call, a gold call never made). The difference matters for RL: reward can only
reinforce what the policy sometimes samples, and a policy samples each of a few options far more often than a
value it has not learned to carry over.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from eigenloop.checkers.evaluate import action_matches, passed, unsaid
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Domain, Side
from eigenloop.protocol import arguments_of, side_from_pb

MALFORMED = "malformed tool call"
WRONG_VALUE, WRONG_CHOICE, NOT_SAID, OTHER = "wrong value", "wrong choice", "not said", "other"
MISTAKE_KINDS = (WRONG_VALUE, WRONG_CHOICE, NOT_SAID, MALFORMED, OTHER)
_WRONG_ARGUMENT = re.compile(r"(?P<tool>\S+): wrong (?P<argument>\S+)")


def failure_kind(task: pb.Task, trajectory: pb.Trajectory) -> str | None:
    """The label of the first departure from `task` in `trajectory`; None when it passed."""
    if passed(trajectory):
        return None
    calls, malformed = _agent_calls(trajectory.messages)
    for match in task.checker.forbidden_actions:
        if any(action_matches(match, c.call) for c in calls):
            return f"{match.call.name}: forbidden"
    for gold in task.checker.gold_actions:
        if side_from_pb(gold.side) is not Side.USER:
            label = _departure(gold, calls, malformed)
            if label is not None:
                return label
    if trajectory.reward.checker_error:
        return "other: checker error"
    for entry in trajectory.reward.breakdown:
        if entry.in_basis and entry.checked and entry.value < 1.0:
            if entry.component == pb.REWARD_COMPONENT_COMMUNICATE:
                missing = unsaid(task.checker.communicate_info, trajectory.messages)
                return "not said: " + ", ".join(_word(info) for info in missing)
            return "other: " + pb.RewardComponent.Name(entry.component).removeprefix("REWARD_COMPONENT_").lower()
    return "other: no reward"


def mistake_kind(domain: Domain, label: str) -> str:
    """The kind of mistake (one of MISTAKE_KINDS) a `failure_kind` label of a task of `domain` names. An argument
    is a choice when the tool's schema lists its values (an enum); else it is a value."""
    if label == MALFORMED:
        return MALFORMED
    if label.startswith("not said: "):
        return NOT_SAID
    if label.endswith((": forbidden", ": not called")):
        return WRONG_CHOICE
    wrong = _WRONG_ARGUMENT.fullmatch(label)
    tool = domain.tool(wrong["tool"]) if wrong else None
    if wrong is None or tool is None:
        return OTHER
    schema = tool.json_schema.get("properties", {}).get(wrong["argument"], {})
    return WRONG_CHOICE if "enum" in schema else WRONG_VALUE


def count_mistakes(domain: Domain, failures: dict[str, int]) -> dict[str, int]:
    """`count_failures`'s counts for tasks of `domain` summed by `mistake_kind`, in MISTAKE_KINDS order."""
    kinds: Counter[str] = Counter()
    for label, n in failures.items():
        kinds[mistake_kind(domain, label)] += n
    return {kind: kinds[kind] for kind in MISTAKE_KINDS if kinds[kind]}


def count_failures(pairs: Iterable[tuple[pb.Task, pb.Trajectory]]) -> dict[str, int]:
    """How many episodes failed in each way, most frequent first (infrastructure-failed ones are not scored)."""
    counts: Counter[str] = Counter()
    for task, trajectory in pairs:
        if trajectory.status == pb.EPISODE_STATUS_INFRA_FAILED:
            continue
        label = failure_kind(task, trajectory)
        if label is not None:
            counts[label] += 1
    return dict(counts.most_common())


@dataclass(frozen=True)
class _CallOutcome:
    call: pb.ToolCall
    error: str | None
    """How the environment refused the call ("invalid arguments", "tool failed"); None when it ran."""


def _agent_calls(messages: Iterable[pb.Message]) -> tuple[list[_CallOutcome], bool]:
    """The agent's calls with their outcome, and whether it wrote a call that could not be parsed at all.

    A result answers the call of its turn with its call id (ids are unique within a turn only); the error a turn
    gets for an unparsable call answers no call."""
    outcomes: list[_CallOutcome] = []
    waiting: dict[str, pb.ToolCall] = {}
    malformed = False
    for message in messages:
        if message.role != pb.ROLE_TOOL:
            waiting = {c.id: c for c in message.tool_calls}
            continue
        result = message.tool_result
        call = waiting.pop(result.call_id, None)
        if call is None:
            malformed = malformed or result.error_kind == pb.TOOL_ERROR_KIND_INVALID_JSON
        elif side_from_pb(call.side) is not Side.USER:
            kind = pb.ToolErrorKind.Name(result.error_kind).removeprefix("TOOL_ERROR_KIND_")
            outcomes.append(_CallOutcome(call, kind.lower().replace("_", " ") if result.error else None))
    return outcomes, malformed


def _departure(gold: pb.ToolCall, calls: list[_CallOutcome], malformed: bool) -> str | None:
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


def _word(info: str) -> str:
    return "<value>" if any(ch.isdigit() for ch in info) else info
