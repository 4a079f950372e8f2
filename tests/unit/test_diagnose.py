"""failure_kind: each way an episode can depart from its task gets its label (toy built-in tasks, episodes by hand);
fuzzed: any order of turns, calls without results and results naming no call or another, arguments that are not
JSON objects, every error kind, any reward breakdown: a label for every failed episode, None for every passed one,
nothing raises. mistake_kind: every label sorted by the tool's schema (toy, retail and airline), labels naming a
tool or argument the domain lacks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eigenloop.checkers.diagnose import (
    MALFORMED,
    NOT_SAID,
    OTHER,
    WRONG_CHOICE,
    WRONG_VALUE,
    count_failures,
    failure_kind,
    mistake_kind,
)
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import load_domain
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


def _malformed() -> list[pb.Message]:
    error = pb.ToolResult(content="Error: malformed", error=True, error_kind=pb.TOOL_ERROR_KIND_INVALID_JSON)
    return [pb.Message(role=pb.ROLE_TOOL, tool_result=error)]


def test_an_unparsable_call_where_a_gold_call_is_missing_is_malformed() -> None:
    unparsed = pb.Message(role=pb.ROLE_ASSISTANT, content='<tool_call>{"name": "cancel_')
    episode = _episode(CANCEL, *_turns([("get_order", "O", OK)]), [unparsed, *_malformed()])
    assert failure_kind(CANCEL, episode) == MALFORMED


def test_a_turn_with_an_unparsable_call_beside_parsed_ones_pairs_each_result_with_its_call() -> None:
    """The rollout manager answers the unparsable call first, then the parsed ones: both gold calls ran here,
    so what failed is what the reply left unsaid."""
    both = _turns([("get_order", "O", OK), ("cancel_order", "O/mistake", OK)])[0]
    turn = [both[0], *_malformed(), *both[1:]]
    episode = _episode(CANCEL, turn)
    episode.reward.breakdown.add(component=pb.REWARD_COMPONENT_COMMUNICATE, value=0.0, in_basis=True, checked=True)
    task = pb.Task()
    task.CopyFrom(CANCEL)
    task.checker.communicate_info.append("cancelled")
    assert failure_kind(task, episode) == "not said: cancelled"


def test_a_forbidden_call_counts_even_when_the_environment_refused_it() -> None:
    order = _order(REFUSE)
    refused = _turn(("cancel_order", {"order_id": order, "reason": "cheap"}, pb.TOOL_ERROR_KIND_INVALID_ARGUMENTS))
    assert failure_kind(REFUSE, _episode(REFUSE, refused)) == "cancel_order: forbidden"


def test_a_write_the_task_forbids_comes_first() -> None:
    order = _order(REFUSE)
    cancel = _turn(
        ("get_order", {"order_id": order}, OK), ("cancel_order", {"order_id": order, "reason": "mistake"}, OK)
    )
    assert failure_kind(REFUSE, _episode(REFUSE, cancel)) == "cancel_order: forbidden"


def test_right_calls_but_the_reply_lacks_what_must_be_said() -> None:
    task = pb.Task()
    task.CopyFrom(STATUS)
    task.checker.communicate_info.append("$12.50")  # a value: left out of the label, so entities count together
    episode = _episode(task, _turn(("get_order", {"order_id": _order(STATUS)}, OK)), said="It is $12.50.")
    # an unchecked component (no judge) is no verdict, so it is not what failed
    episode.reward.breakdown.add(component=pb.REWARD_COMPONENT_NL_ASSERTION, value=0.0, in_basis=True, checked=False)
    episode.reward.breakdown.add(component=pb.REWARD_COMPONENT_ACTION, value=1.0, in_basis=True, checked=True)
    episode.reward.breakdown.add(component=pb.REWARD_COMPONENT_COMMUNICATE, value=0.0, in_basis=True, checked=True)
    assert failure_kind(task, episode) == "not said: delivered"
    episode.messages[-1].content = "It is delivered."
    task.checker.communicate_info[-1] = "$13.00"
    assert failure_kind(task, episode) == "not said: <value>"


def test_a_checker_that_failed_to_run_is_said_so() -> None:
    episode = _episode(STATUS, _turn(("get_order", {"order_id": _order(STATUS)}, OK)))
    episode.reward.checker_error = True
    assert failure_kind(STATUS, episode) == "other: checker error"


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
            call_id = draw(st.sampled_from(["", "call_0", "call_1", "call_7"]))
            result = pb.ToolResult(call_id=call_id, error=kind > pb.TOOL_ERROR_KIND_NONE, error_kind=kind)
            message.tool_result.CopyFrom(result)
        else:
            for i in range(draw(st.integers(0, 2))):
                name = draw(st.sampled_from(["get_order", "cancel_order", "update_address", "nope"]))
                arguments = draw(st.sampled_from(['{"order_id": "O1"}', "{", "[]", '{"reason": null}', ""]))
                side = draw(st.sampled_from([pb.TOOL_SIDE_AGENT, pb.TOOL_SIDE_USER, pb.TOOL_SIDE_UNSPECIFIED]))
                message.tool_calls.add(id=f"call_{i}", name=name, arguments_json=arguments, side=side)
        out.append(message)
    return out


_COMPONENTS = [c for c in pb.RewardComponent.values() if c]


@settings(max_examples=300, deadline=None)
@given(
    messages=_messages(),
    reward=st.sampled_from([0.0, 0.5, 1.0]),
    task=st.sampled_from(list(TASKS.values())),
    breakdown=st.lists(st.tuples(st.sampled_from(_COMPONENTS), st.booleans(), st.booleans(), st.sampled_from([0, 1]))),
    checker_error=st.booleans(),
)
def test_any_episode_gets_a_label_or_none_and_nothing_raises(
    messages: list[pb.Message],
    reward: float,
    task: pb.Task,
    breakdown: list[tuple[int, bool, bool, int]],
    checker_error: bool,
) -> None:
    trajectory = pb.Trajectory(task_id=task.id, messages=messages)
    trajectory.reward.value = reward
    trajectory.reward.checker_error = checker_error
    for component, in_basis, checked, value in breakdown:
        trajectory.reward.breakdown.add(component=component, in_basis=in_basis, checked=checked, value=value)
    label = failure_kind(task, trajectory)
    assert (label is None) == (reward >= 1.0)
    assert label is None or label.strip()


@pytest.mark.parametrize(
    ("domain", "label", "kind"),
    [
        ("toy", "cancel_order: wrong reason", WRONG_CHOICE),  # reason is an enum
        ("toy", "update_address: wrong address", WRONG_VALUE),
        ("toy", "get_order: wrong order_id", WRONG_VALUE),
        ("toy", "cancel_order: forbidden", WRONG_CHOICE),
        ("toy", "update_address: not called", WRONG_CHOICE),
        ("toy", "not said: delivered", NOT_SAID),
        ("toy", MALFORMED, MALFORMED),
        ("toy", "cancel_order: tool failed", OTHER),
        ("toy", "other: checker error", OTHER),
        ("toy", "book_flight: wrong cabin", OTHER),  # no such toy tool
        ("toy", "cancel_order: wrong colour", WRONG_VALUE),  # no such argument: nothing says it is a choice
        ("airline", "book_reservation: wrong cabin", WRONG_CHOICE),
        ("airline", "book_reservation: wrong user_id", WRONG_VALUE),
        ("retail", "cancel_pending_order: wrong reason", WRONG_CHOICE),
        ("retail", "cancel_pending_order: wrong order_id", WRONG_VALUE),
    ],
)
def test_mistake_kinds_follow_the_tool_schema(domain: str, label: str, kind: str) -> None:
    assert mistake_kind(load_domain(domain), label) == kind
