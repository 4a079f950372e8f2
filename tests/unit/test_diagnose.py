"""failure_kind: each way an episode can depart from its task gets its label (toy built-in tasks, episodes by hand);
fuzzed: any order of turns, calls without results and results without calls, arguments that are not JSON objects,
every error kind: a label for every failed episode, None for every passed one, nothing raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eigenloop.checkers.diagnose import MALFORMED, count_failures, failure_kind
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.toy.tasks import sample_tasks
from eigenloop.protocol import text_message

TASKS = {t.id: t for t in sample_tasks(0)}
CANCEL, REFUSE, STATUS = TASKS["toy-cancel-pending"], TASKS["toy-refuse-shipped"], TASKS["toy-order-status"]


def _order(task: pb.Task) -> str:
    lookup = next(c for c in task.checker.gold_actions if c.name == "get_order")
    return str(json.loads(lookup.arguments_json)["order_id"])


def _turn(*calls: tuple[str, dict[str, str], pb.ToolErrorKind.ValueType]) -> list[pb.Message]:
    """One agent turn making `calls` (ids restart every turn, as the rollout manager writes them), then results."""
    turn = pb.Message(role=pb.ROLE_ASSISTANT)
    results = []
    for i, (name, args, error) in enumerate(calls):
        turn.tool_calls.add(id=f"call_{i}", name=name, arguments_json=json.dumps(args), side=pb.TOOL_SIDE_AGENT)
        result = pb.ToolResult(call_id=f"call_{i}", name=name, error=error != pb.TOOL_ERROR_KIND_NONE, error_kind=error)
        results.append(pb.Message(role=pb.ROLE_TOOL, tool_result=result))
    return [turn, *results]


OK = pb.TOOL_ERROR_KIND_NONE


def _episode(task: pb.Task, *turns: list[pb.Message], reward: float = 0.0, said: str = "Done.") -> pb.Trajectory:
    messages = [text_message(pb.ROLE_USER, task.user.instruction)]
    for turn in turns:
        messages += turn
    messages.append(text_message(pb.ROLE_ASSISTANT, said))
    trajectory = pb.Trajectory(task_id=task.id, messages=messages, status=pb.EPISODE_STATUS_COMPLETED)
    trajectory.reward.value = reward
    return trajectory


def test_a_passed_episode_has_no_failure() -> None:
    o = _order(CANCEL)
    episode = _episode(CANCEL, _turn(("get_order", {"order_id": o}, OK)), reward=1.0)
    assert failure_kind(CANCEL, episode) is None


Call = tuple[str, str, "pb.ToolErrorKind.ValueType"]


def _args(spec: str) -> dict[str, str]:
    """ "O" is the task's order, "O/reason" adds a reason, anything else is another order id."""
    order, _, reason = spec.partition("/")
    args = {"order_id": _order(CANCEL) if order == "O" else order}
    return {**args, "reason": reason} if reason else args


def _turns(*turns: list[Call]) -> list[list[pb.Message]]:
    return [_turn(*((name, _args(spec), error) for name, spec, error in calls)) for calls in turns]


@pytest.mark.parametrize(
    ("turns", "label"),
    [
        # the lookup right, the cancellation with another reason
        ([[("get_order", "O", OK)], [("cancel_order", "O/no_longer_needed", OK)]], "cancel_order: wrong reason"),
        # a reason outside the enum: refused by the environment, and still the wrong argument
        ([[("get_order", "O", OK)], [("cancel_order", "O/cheap", pb.TOOL_ERROR_KIND_INVALID_ARGUMENTS)]],
         "cancel_order: wrong reason"),
        # the first departure wins: the lookup of another order comes before the cancellation
        ([[("get_order", "O99999", pb.TOOL_ERROR_KIND_TOOL_FAILED)], [("cancel_order", "O/mistake", OK)]],
         "get_order: wrong order_id"),
        ([[("get_order", "O", OK)]], "cancel_order: not called"),
        # the right call, refused: its id (call_0) is the lookup's too, which ran; results pair by turn, not id
        ([[("get_order", "O", OK)], [("cancel_order", "O/mistake", pb.TOOL_ERROR_KIND_TOOL_FAILED)]],
         "cancel_order: tool failed"),
        # refused once, then made again and run: no departure on the calls, so the checker's component decides
        ([[("get_order", "O", pb.TOOL_ERROR_KIND_TOOL_FAILED)], [("get_order", "O", OK)],
          [("cancel_order", "O/mistake", OK)]], "other: no reward"),
    ],
)  # fmt: skip
def test_departures_from_the_gold_calls(turns: list[list[Call]], label: str) -> None:
    assert failure_kind(CANCEL, _episode(CANCEL, *_turns(*turns))) == label


def test_an_unparsable_call_where_a_gold_call_is_missing_is_malformed() -> None:
    unparsed = pb.Message(role=pb.ROLE_ASSISTANT, content='<tool_call>{"name": "cancel_')
    error = pb.ToolResult(content="Error: malformed", error=True, error_kind=pb.TOOL_ERROR_KIND_INVALID_JSON)
    episode = _episode(
        CANCEL, *_turns([("get_order", "O", OK)]), [unparsed, pb.Message(role=pb.ROLE_TOOL, tool_result=error)]
    )
    assert failure_kind(CANCEL, episode) == MALFORMED


def test_a_write_the_task_forbids_comes_first() -> None:
    order = _order(REFUSE)
    cancel = _turn(
        ("get_order", {"order_id": order}, OK), ("cancel_order", {"order_id": order, "reason": "mistake"}, OK)
    )
    assert failure_kind(REFUSE, _episode(REFUSE, cancel)) == "cancel_order: forbidden"


def test_right_calls_but_the_reply_lacks_what_must_be_said() -> None:
    episode = _episode(STATUS, _turn(("get_order", {"order_id": _order(STATUS)}, OK)), said="Here you go.")
    episode.reward.breakdown.add(component=pb.REWARD_COMPONENT_ACTION, value=1.0, in_basis=True, checked=True)
    episode.reward.breakdown.add(component=pb.REWARD_COMPONENT_COMMUNICATE, value=0.0, in_basis=True, checked=True)
    assert failure_kind(STATUS, episode) == "not said: delivered"


def test_counts_skip_passed_and_infrastructure_failed_episodes() -> None:
    wrong = _episode(CANCEL, *_turns([("get_order", "O", OK)], [("cancel_order", "O/found_cheaper", OK)]))
    passed = _episode(CANCEL, reward=1.0)
    dropped = pb.Trajectory(task_id=CANCEL.id, status=pb.EPISODE_STATUS_INFRA_FAILED)
    counts = count_failures([(CANCEL, wrong), (CANCEL, wrong), (CANCEL, passed), (CANCEL, dropped)])
    assert counts == {"cancel_order: wrong reason": 2}


_ROLES = [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL]
_KINDS = list(pb.ToolErrorKind.values())


@st.composite
def _messages(draw: st.DrawFn) -> list[pb.Message]:
    """Any order of turns: calls with or without results, results with no call, odd arguments and error kinds."""
    out = []
    for role in draw(st.lists(st.sampled_from(_ROLES), max_size=12)):
        message = pb.Message(role=role, content=draw(st.text(max_size=20)))
        if role == pb.ROLE_TOOL:
            kind = draw(st.sampled_from(_KINDS))
            message.tool_result.CopyFrom(pb.ToolResult(error=kind > pb.TOOL_ERROR_KIND_NONE, error_kind=kind))
        else:
            for _ in range(draw(st.integers(0, 2))):
                name = draw(st.sampled_from(["get_order", "cancel_order", "update_address", "nope"]))
                arguments = draw(st.sampled_from(['{"order_id": "O1"}', "{", "[]", '{"reason": null}', ""]))
                side = draw(st.sampled_from([pb.TOOL_SIDE_AGENT, pb.TOOL_SIDE_USER, pb.TOOL_SIDE_UNSPECIFIED]))
                message.tool_calls.add(id="call_0", name=name, arguments_json=arguments, side=side)
        out.append(message)
    return out


@settings(max_examples=300, deadline=None)
@given(messages=_messages(), reward=st.sampled_from([0.0, 0.5, 1.0]), task=st.sampled_from(list(TASKS.values())))
def test_any_episode_gets_a_label_or_none_and_nothing_raises(
    messages: list[pb.Message], reward: float, task: pb.Task
) -> None:
    trajectory = pb.Trajectory(task_id=task.id, messages=messages)
    trajectory.reward.value = reward
    label = failure_kind(task, trajectory)
    assert (label is None) == (reward >= 1.0)
    assert label is None or label.strip()
