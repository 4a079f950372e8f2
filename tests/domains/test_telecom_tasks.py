"""The built-in telecom tasks: every goal covered, deterministic, and every task discriminating.

For each task: its gold calls replayed in a fresh session all succeed and score 1.0; doing nothing scores
below 1.0; so does dropping the last state-changing gold call, and making that call from the wrong side.
The reference dialogue is the gold path, with every call on the side of the speaker who makes it.
"""

from __future__ import annotations

import json
import re

import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import ToolKind
from eigenloop.domains.telecom import DOMAIN
from eigenloop.domains.telecom.samplers import SAMPLERS
from eigenloop.domains.telecom.tasks import sample_tasks
from eigenloop.env.session import EnvSession
from eigenloop.protocol import side_from_pb

SEED = 0
TASKS = sample_tasks(SEED)
TRANSFER_GOALS = {"locked_sim_transfer", "contract_end_suspension"}


def _goal(task: pb.Task) -> str:
    match = re.fullmatch(r"telecom-(\w+)-(\d+)", task.id)
    assert match, task.id
    return match.group(1)


def _component(reward: pb.Reward, component: pb.RewardComponent.ValueType) -> float:
    return next(e.value for e in reward.breakdown if e.component == component)


def _last_effective(calls: list[pb.ToolCall]) -> int:
    """Index of the last gold call that changes something or is graded: a write, or the transfer."""
    tools = [DOMAIN.tool(c.name) for c in calls]
    return max(i for i, tool in enumerate(tools) if tool is not None and tool.kind is not ToolKind.READ)


def _flipped(call: pb.ToolCall) -> pb.ToolCall:
    side = pb.TOOL_SIDE_AGENT if call.side == pb.TOOL_SIDE_USER else pb.TOOL_SIDE_USER
    return pb.ToolCall(name=call.name, arguments_json=call.arguments_json, side=side)


def test_every_goal_has_tasks_with_unique_ids() -> None:
    ids = [t.id for t in TASKS]
    assert len(ids) == len(set(ids))
    per_goal = {goal: sum(_goal(t) == goal for t in TASKS) for goal in SAMPLERS}
    assert all(2 <= n <= 3 for n in per_goal.values()), per_goal
    assert {_goal(t) for t in TASKS} == set(SAMPLERS)
    assert all(t.domain == "telecom" and t.provenance.seed == SEED for t in TASKS)


def test_tasks_are_deterministic() -> None:
    again = sample_tasks(SEED)
    assert [t.SerializeToString(deterministic=True) for t in again] == [
        t.SerializeToString(deterministic=True) for t in TASKS
    ]


def test_another_seed_gives_working_tasks() -> None:
    tasks = sample_tasks(1)
    assert {_goal(t) for t in tasks} == set(SAMPLERS)
    assert [t.SerializeToString(deterministic=True) for t in tasks] != [
        t.SerializeToString(deterministic=True) for t in TASKS
    ]
    for task in tasks:
        session = EnvSession(DOMAIN, task=task, seed=1)
        assert session.evaluate().value < 1.0, task.id
        for call in task.checker.gold_actions:
            assert not session.call(call).error
        assert session.evaluate().value == 1.0, task.id


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_task_is_complete(task: pb.Task) -> None:
    goal = _goal(task)
    user = task.user
    assert user.instruction and user.known_info and user.unknown_info and user.reason_for_call and task.description
    number = json.loads(task.initial_state.actions[0].arguments_json)["phone_number"]
    assert task.initial_state.actions[0].name == "set_user_info" and number in user.known_info
    for action in task.initial_state.actions:  # breaks: setup functions, or tools called from their own side
        tool = DOMAIN.tool(action.name)
        assert action.name in DOMAIN.setup_functions or (tool is not None and side_from_pb(action.side) is tool.side)
    checker = task.checker
    assert checker.assertions and all(a.function in DOMAIN.assertions for a in checker.assertions)
    assert all(a.side in (pb.TOOL_SIDE_AGENT, pb.TOOL_SIDE_USER) and a.description for a in checker.assertions)
    if goal in TRANSFER_GOALS:
        assert list(checker.reward_basis) == [pb.REWARD_COMPONENT_ASSERTION, pb.REWARD_COMPONENT_ACTION]
        (required,) = checker.required_actions
        assert required.call.name == "transfer_to_human_agents" and required.match == pb.ARGUMENT_MATCH_NAME_ONLY
        assert checker.gold_actions[-1].name == "transfer_to_human_agents"
    else:
        assert list(checker.reward_basis) == [pb.REWARD_COMPONENT_ASSERTION, pb.REWARD_COMPONENT_STATE]
        assert not checker.required_actions
        assert all(c.name != "transfer_to_human_agents" for c in checker.gold_actions)


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_reference_dialogue_is_the_gold_path(task: pb.Task) -> None:
    dialogue = list(task.reference_dialogue)
    assert dialogue[0].role == pb.ROLE_USER and dialogue[0].content and not dialogue[0].tool_calls
    assert dialogue[-1].role == pb.ROLE_ASSISTANT and dialogue[-1].content and not dialogue[-1].tool_calls
    calls: list[pb.ToolCall] = []
    for i, message in enumerate(dialogue):
        for call in message.tool_calls:  # one call per message, answered by the next message
            assert len(message.tool_calls) == 1 and not message.content
            want = pb.TOOL_SIDE_USER if message.role == pb.ROLE_USER else pb.TOOL_SIDE_AGENT
            assert message.role in (pb.ROLE_USER, pb.ROLE_ASSISTANT) and call.side == want
            result = dialogue[i + 1]
            assert result.role == pb.ROLE_TOOL and result.tool_result.call_id == call.id
            assert not result.tool_result.error and result.content == result.tool_result.content
            calls.append(pb.ToolCall(name=call.name, arguments_json=call.arguments_json, side=call.side))
    assert calls == list(task.checker.gold_actions)
    assert any(m.role == pb.ROLE_USER and m.tool_calls for m in dialogue)  # the user acts on their phone
    if _goal(task) in TRANSFER_GOALS:
        assert "TRANSFERRED TO A HUMAN AGENT" in dialogue[-1].content


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_gold_replay_scores_one(task: pb.Task) -> None:
    session = EnvSession(DOMAIN, task=task, seed=task.provenance.seed)
    for call in task.checker.gold_actions:
        result = session.call(call)
        assert not result.error, f"{call.name}: {result.content}"
    reward = session.evaluate(task.reference_dialogue)
    assert reward.value == 1.0, reward.failure_reason
    assert not reward.checker_error and reward.final_state_hash == reward.expected_state_hash


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_task_discriminates(task: pb.Task) -> None:
    """Nothing, a partial fix, or the last fix from the wrong side all score below 1 (the full fix: above)."""
    gold = list(task.checker.gold_actions)
    last = _last_effective(gold)
    session = EnvSession(DOMAIN, task=task, seed=task.provenance.seed)

    empty = session.evaluate()
    assert empty.value < 1.0
    if _goal(task) in TRANSFER_GOALS:  # tau2's unfixable tasks: the phone stays down, the transfer is required
        assert _component(empty, pb.REWARD_COMPONENT_ASSERTION) == 1.0
        assert _component(empty, pb.REWARD_COMPONENT_ACTION) == 0.0
    else:  # the breaks are real: some assertion fails at the start
        assert _component(empty, pb.REWARD_COMPONENT_ASSERTION) == 0.0

    for call in gold[:last] + gold[last + 1 :]:
        assert not session.call(call).error
    partial = session.evaluate()
    assert partial.value < 1.0, f"without {gold[last].name} the task still passes"

    if _goal(task) not in TRANSFER_GOALS:
        # (The ACTION component matches the transfer by name alone, whoever called it, so a wrong-side transfer
        # is not caught there; the fixable tasks' last fix changes state, so its side matters.)
        wrong = session.call(_flipped(gold[last]))
        assert wrong.error and wrong.error_kind == pb.TOOL_ERROR_KIND_WRONG_SIDE
        assert session.evaluate().value < 1.0


def test_contract_end_forbids_resuming_the_line() -> None:
    task = next(t for t in TASKS if _goal(t) == "contract_end_suspension")
    (forbidden,) = task.checker.forbidden_actions
    assert forbidden.call.name == "resume_line"
    session = EnvSession(DOMAIN, task=task, seed=SEED)
    for call in task.checker.gold_actions:
        assert not session.call(call).error
    lookup, details = task.checker.gold_actions[:2]
    assert (lookup.name, details.name) == ("get_customer_by_phone", "get_details_by_id")
    owner = json.loads(session.call(lookup).content)["customer_id"]
    line = json.loads(details.arguments_json)["id"]
    resume = pb.ToolCall(name="resume_line", arguments_json=json.dumps({"customer_id": owner, "line_id": line}))
    assert not session.call(resume).error  # the tool itself allows it: only the policy (and the checker) forbid it
    assert _component(session.evaluate(), pb.REWARD_COMPONENT_ACTION) == 0.0
