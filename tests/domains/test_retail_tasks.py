"""The built-in retail tasks: every goal covered, deterministic, and every checker discriminating (the gold path and
the reference dialogue score 1, doing nothing or doing the wrong thing scores less)."""

from __future__ import annotations

import json
import random
from collections import Counter
from functools import cache

import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import ToolKind
from eigenloop.domains.retail import DOMAIN
from eigenloop.domains.retail.db import RetailDB
from eigenloop.domains.retail.samplers import SAMPLERS
from eigenloop.domains.retail.tasks import sample_tasks
from eigenloop.env.session import EnvSession
from eigenloop.protocol import arguments_of, text_message, tool_call

SEED = 0
TASKS = sample_tasks(SEED)
BY_ID = {t.id: t for t in TASKS}
_STATE = DOMAIN.initial_state(SEED)
assert isinstance(_STATE.db, RetailDB)
DB: RetailDB = _STATE.db


def _goal(task: pb.Task) -> str:
    return task.id.removeprefix("retail-").rsplit("-", 1)[0]


@cache
def _allowed(goal: str) -> bool:
    scenario = SAMPLERS[goal](_STATE, random.Random(SEED))
    assert scenario is not None
    return scenario.allowed


def _session(task: pb.Task) -> EnvSession:
    return EnvSession(DOMAIN, task=task, seed=task.provenance.seed)


def _run(task: pb.Task, calls: list[pb.ToolCall], messages: list[pb.Message] | None = None) -> pb.Reward:
    session = _session(task)
    for call in calls:
        session.call(call)
    return session.evaluate(messages or [])


def _writes(task: pb.Task) -> list[pb.ToolCall]:
    return [c for c in task.checker.gold_actions if DOMAIN.tool(c.name).kind is ToolKind.WRITE]  # type: ignore[union-attr]


def _with_args(call: pb.ToolCall, **changes: object) -> pb.ToolCall:
    return tool_call(call.name, {**arguments_of(call), **changes})


# ------------------------------------------------------------------------------------------------ the task set


def test_every_goal_has_two_or_three_tasks_with_unique_ids() -> None:
    per_goal = Counter(_goal(t) for t in TASKS)
    assert set(per_goal) == set(SAMPLERS)
    assert all(2 <= n <= 3 for n in per_goal.values()), per_goal
    assert len(BY_ID) == len(TASKS)
    for task in TASKS:
        assert task.domain == "retail" and task.description
        assert task.user.instruction and task.user.persona and task.user.known_info and task.user.unknown_info
        assert task.checker.gold_actions and task.checker.required_actions
        assert pb.REWARD_COMPONENT_STATE in task.checker.reward_basis
        assert task.provenance.source == "builtin" and task.provenance.seed == SEED


def test_tasks_of_a_goal_use_distinct_entities() -> None:
    for goal in SAMPLERS:
        targets = [
            json.dumps([arguments_of(c) for c in t.checker.gold_actions], sort_keys=True)
            for t in TASKS
            if _goal(t) == goal
        ]
        assert len(set(targets)) == len(targets), goal


def test_same_seed_same_bytes_other_seed_other_tasks() -> None:
    again = sample_tasks(SEED)
    assert [t.SerializeToString(deterministic=True) for t in again] == [
        t.SerializeToString(deterministic=True) for t in TASKS
    ]
    other = sample_tasks(SEED + 1)  # builds (every gold call of the reference dialogues succeeds) and differs
    assert {_goal(t) for t in other} == set(SAMPLERS)
    assert [t.checker.gold_actions[-1].arguments_json for t in other] != [
        t.checker.gold_actions[-1].arguments_json for t in TASKS
    ]


def test_not_allowed_goals_write_nothing_and_forbid_the_request() -> None:
    refusals = [t for t in TASKS if not _allowed(_goal(t))]
    assert len({_goal(t) for t in refusals}) == sum(not _allowed(g) for g in SAMPLERS) >= 10
    for task in refusals:
        assert not _writes(task), task.id
        assert task.checker.forbidden_actions, task.id
        assert task.checker.communicate_info or _goal(task) == "act_on_other_users_order", task.id
    for task in TASKS:
        if _allowed(_goal(task)) and _goal(task) != "order_status":
            assert len(_writes(task)) == 1, task.id


# --------------------------------------------------------------------------------------------- per-task checks


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_reference_dialogue_is_the_gold_path(task: pb.Task) -> None:
    """Its tool calls are the gold calls, each answered by its real result, and it ends with the agent saying
    everything the checker wants said."""
    session = _session(task)
    dialogue = list(task.reference_dialogue)
    gold = iter(task.checker.gold_actions)
    for i, message in enumerate(dialogue):
        if not message.tool_calls:
            continue
        assert message.role == pb.ROLE_ASSISTANT and len(message.tool_calls) == 1 and not message.content
        call, expected = message.tool_calls[0], next(gold)
        assert (call.name, arguments_of(call)) == (expected.name, arguments_of(expected))
        result = session.call(call)
        assert not result.error, (call.name, result.content)
        reply = dialogue[i + 1]
        assert reply.role == pb.ROLE_TOOL and reply.tool_result.call_id == call.id
        assert reply.content == result.content
    assert next(gold, None) is None
    assert dialogue[0].role == pb.ROLE_USER
    last = dialogue[-1]
    assert last.role == pb.ROLE_ASSISTANT and last.content and not last.tool_calls
    text = last.content.lower().replace(",", "")
    assert all(info.lower() in text for info in task.checker.communicate_info)


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_gold_scores_one_and_doing_nothing_less(task: pb.Task) -> None:
    session = _session(task)
    for call in task.checker.gold_actions:
        result = session.call(call)
        assert not result.error, (call.name, result.content)
    reward = session.evaluate(list(task.reference_dialogue))
    assert reward.value == 1.0, reward.failure_reason
    assert not reward.checker_error
    assert {b.component for b in reward.breakdown if b.in_basis} == set(task.checker.reward_basis)
    assert _run(task, []).value < 1.0


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_doing_the_wrong_thing_scores_less(task: pb.Task) -> None:
    gold = list(task.checker.gold_actions)
    dialogue = list(task.reference_dialogue)
    wrong: list[list[pb.ToolCall]] = []
    if not _allowed(_goal(task)):
        wrong += [[*gold, m.call] for m in task.checker.forbidden_actions]  # the write the user asks for
        if _goal(task) == "cancel_with_invalid_reason":  # or cancelling with a reason the user never gave
            order_id = arguments_of(task.checker.forbidden_actions[0].call)["order_id"]
            wrong.append(
                [*gold, tool_call("cancel_pending_order", {"order_id": order_id, "reason": "no longer needed"})]
            )
    elif not _writes(task):  # informational: reading without telling
        assert _run(task, gold, [text_message(pb.ROLE_ASSISTANT, "Let me know if I can help further.")]).value < 1.0
    else:
        (write,) = _writes(task)
        reads, args = gold[:-1], arguments_of(write)
        if "order_id" in args:  # the same write on another order with the same status
            order = DB.orders[args["order_id"]]
            other = next(o for o in sorted(DB.orders) if o != order.order_id and DB.orders[o].status == order.status)
            wrong.append([*reads, _with_args(write, order_id=other)])
        else:
            other = next(u for u in sorted(DB.users) if u != args["user_id"])
            wrong.append([*reads, _with_args(write, user_id=other)])
        if "new_item_ids" in args:  # the same order, another variant of the product
            item = next(i for i in DB.orders[args["order_id"]].items if i.item_id == args["item_ids"][0])
            variants = DB.products[item.product_id].variants.values()
            others = [
                v.item_id for v in variants if v.available and v.item_id not in (item.item_id, *args["new_item_ids"])
            ]
            if others:
                wrong.append([*reads, _with_args(write, new_item_ids=[others[0]])])
        if write.name == "return_delivered_order_items":  # the same order, other items
            kept = [i.item_id for i in DB.orders[args["order_id"]].items if i.item_id not in args["item_ids"]]
            wrong.append([*reads, _with_args(write, item_ids=kept[:1] or args["item_ids"][1:])])
        if write.name == "cancel_pending_order":  # the other reason
            reason = next(r for r in ("no longer needed", "ordered by mistake") if r != args["reason"])
            wrong.append([*reads, _with_args(write, reason=reason)])
    for calls in wrong:
        reward = _run(task, calls, dialogue)
        assert reward.value < 1.0, (task.id, calls[-1].name, calls[-1].arguments_json)
