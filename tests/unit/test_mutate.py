"""Checker mutation testing: gold trajectories, each operator, scores, equivalence, determinism and the CLI."""

from __future__ import annotations

import json
from collections import Counter as Tally
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from eigenloop.checkers.mutate import (
    OPERATORS,
    Mutant,
    MutationReport,
    Trajectory,
    _redact,
    _trajectory_key,
    evaluate_trajectory,
    gold_trajectory,
    mutants,
    overall_score,
    score_task,
)
from eigenloop.cli.checkers import checkers_app
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import load_domain
from eigenloop.domains.base import Domain, DomainState, Side, ToolError, ToolKind, collect_tools, tool
from eigenloop.domains.toy.tasks import sample_tasks
from eigenloop.protocol import arguments_of, assistant_calls, text_message, tool_call, tool_message

TOY = load_domain("toy")
TASKS = {t.id: t for t in sample_tasks()}
PENDING = "O10001"  # the first pending order of an active user in the seed-0 shop, owned by U1001
OWNER = "U1001"


def by_operator(made: list[Mutant]) -> dict[str, list[Mutant]]:
    grouped: dict[str, list[Mutant]] = {name: [] for name in OPERATORS}
    for m in made:
        grouped[m.operator].append(m)
    return grouped


def names(trajectory: Trajectory) -> list[str]:
    return [c.name for c in trajectory.calls]


def multi_write_task() -> pb.Task:
    """Cancel an order, then change an address twice (the second write overwrites the first)."""
    return pb.Task(
        id="toy-multi",
        domain="toy",
        checker=pb.Checker(
            gold_actions=[
                tool_call("get_order", {"order_id": PENDING}),
                tool_call("cancel_order", {"order_id": PENDING, "reason": "mistake"}),
                tool_call("update_address", {"user_id": OWNER, "address": "1 Oak Avenue"}),
                tool_call("update_address", {"user_id": OWNER, "address": "255 Elm Street"}),
            ],
            communicate_info=["cancelled", "255 Elm Street"],
            reward_basis=[pb.REWARD_COMPONENT_STATE, pb.REWARD_COMPONENT_COMMUNICATE],
        ),
    )


# ------------------------------------------------------------------------------------------------ gold


@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_gold_trajectories_of_the_toy_tasks_earn_reward_one(task_id: str) -> None:
    task = TASKS[task_id]
    assert evaluate_trajectory(TOY, task, gold_trajectory(task)).value == 1.0
    assert score_task(TOY, task).gold_reward == 1.0


def test_gold_trajectory_from_the_checker_states_every_required_string() -> None:
    task = TASKS["toy-refuse-shipped"]
    gold = gold_trajectory(task)
    assert list(gold.calls) == list(task.checker.gold_actions)
    (said,) = gold.messages
    assert said.role == pb.ROLE_ASSISTANT and "shipped" in said.content
    assert gold_trajectory(TASKS["toy-cancel-pending"]).messages == ()  # nothing to say, no message


def test_gold_trajectory_from_the_reference_dialogue() -> None:
    get = tool_call("get_order", {"order_id": PENDING}, call_id="c1")
    cancel = tool_call("cancel_order", {"order_id": PENDING, "reason": "mistake"}, call_id="c2")
    task = pb.Task(
        id="toy-dialogue",
        domain="toy",
        reference_dialogue=[
            text_message(pb.ROLE_SYSTEM, "policy"),
            text_message(pb.ROLE_USER, f"Please cancel {PENDING}, I ordered it by mistake."),
            pb.Message(role=pb.ROLE_USER, tool_calls=[pb.ToolCall(name="read_emails", arguments_json="{}")]),
            assistant_calls(get),
            tool_message(pb.ToolResult(call_id="c1", name="get_order", content="{}")),
            pb.Message(role=pb.ROLE_ASSISTANT, content="Cancelling it now.", tool_calls=[cancel]),
            tool_message(pb.ToolResult(call_id="c2", name="cancel_order", content="{}")),
            text_message(pb.ROLE_ASSISTANT, f"Done: order {PENDING} is Cancelled, refund on its way."),
        ],
        checker=pb.Checker(
            gold_actions=[cancel],
            communicate_info=["cancelled"],
            reward_basis=[pb.REWARD_COMPONENT_STATE, pb.REWARD_COMPONENT_COMMUNICATE],
        ),
    )
    gold = gold_trajectory(task)
    assert names(gold) == ["read_emails", "get_order", "cancel_order"]
    assert gold.calls[0].side == pb.TOOL_SIDE_USER  # a call in a user turn is the user's
    assert [(m.role, bool(m.tool_calls)) for m in gold.messages] == [
        (pb.ROLE_USER, False),
        (pb.ROLE_ASSISTANT, False),
        (pb.ROLE_ASSISTANT, False),
    ]
    report = score_task(TOY, task)
    assert report.gold_reward == 1.0 and report.score == 1.0
    (skip,) = by_operator(mutants(TOY, task, gold))["skip_required_message"]
    assert skip.trajectory.messages[-1].content == f"Done: order {PENDING} is [redacted], refund on its way."
    assert skip.trajectory.messages[:2] == gold.messages[:2]


# ------------------------------------------------------------------------------------------- operators


def test_every_operator_on_a_multi_write_task() -> None:
    task = multi_write_task()
    gold = gold_trajectory(task)
    ops = by_operator(mutants(TOY, task, gold))

    # drop_write: one per successful write, the read stays.
    assert [names(m.trajectory) for m in ops["drop_write"]] == [
        ["get_order", "update_address", "update_address"],
        ["get_order", "cancel_order", "update_address"],
        ["get_order", "cancel_order", "update_address"],
    ]
    assert ops["drop_write"][0].description == f"dropped cancel_order({PENDING}, mistake)"

    # change_argument: one per argument of each write, exactly one value changed, still schema-valid.
    changed = ops["change_argument"]
    assert len(changed) == 6
    for m in changed:
        diffs = [
            (k, arguments_of(a)[k], arguments_of(b)[k])
            for a, b in zip(gold.calls, m.trajectory.calls, strict=True)
            for k in arguments_of(a)
            if arguments_of(a)[k] != arguments_of(b)[k]
        ]
        assert len(diffs) == 1, m.description
        key, old, new = diffs[0]
        for call in m.trajectory.calls:
            TOY.tool(call.name).parse_arguments(call.arguments_json)  # type: ignore[union-attr]
        if key == "order_id":
            assert new in TOY.initial_state().db.orders  # type: ignore[attr-defined]
        if key == "user_id":
            assert new in TOY.initial_state().db.users  # type: ignore[attr-defined]
        if key == "reason":
            assert new in ("no_longer_needed", "found_cheaper")
        if key == "address":
            assert new != old and isinstance(new, str)
    assert "changed cancel_order reason: mistake -> " in " ".join(m.description for m in changed)

    # add_forbidden_write: no forbidden actions, so each write tool is repeated on another entity.
    added = ops["add_forbidden_write"]
    assert [m.trajectory.calls[-1].name for m in added] == ["cancel_order", "update_address"]
    assert all(m.trajectory.calls[:-1] == gold.calls for m in added)
    assert arguments_of(added[0].trajectory.calls[-1])["order_id"] != PENDING
    assert arguments_of(added[1].trajectory.calls[-1])["user_id"] != OWNER

    # skip_required_message: one per string, the other string still said.
    skipped = ops["skip_required_message"]
    assert [m.description for m in skipped] == ["never said 'cancelled'", "never said '255 Elm Street'"]
    assert [m.trajectory.messages[0].content for m in skipped] == [
        "To sum up: [redacted]; 255 Elm Street.",
        "To sum up: cancelled; [redacted].",
    ]

    # reorder_dependent_calls: only the two writes on the same user; cancel/update commute (equivalent).
    (swap,) = ops["reorder_dependent_calls"]
    assert [arguments_of(c).get("address") for c in swap.trajectory.calls[2:]] == ["255 Elm Street", "1 Oak Avenue"]


def test_forbidden_actions_are_completed_into_calls_that_act() -> None:
    task = TASKS["toy-refuse-shipped"]
    ops = by_operator(mutants(TOY, task, gold_trajectory(task)))
    (added,) = ops["add_forbidden_write"]
    extra = added.trajectory.calls[-1]
    args = arguments_of(extra)
    shipped = arguments_of(task.checker.gold_actions[1])["order_id"]
    assert extra.name == "cancel_order" and args["order_id"] == shipped  # the scenario's own order
    assert args["reason"] in ("mistake", "no_longer_needed", "found_cheaper")
    assert not ops["drop_write"] and not ops["change_argument"] and not ops["reorder_dependent_calls"]


def test_a_task_without_writes_gets_one_invented_extra_write() -> None:
    task = TASKS["toy-order-status"]
    ops = by_operator(mutants(TOY, task, gold_trajectory(task)))
    (added,) = ops["add_forbidden_write"]
    extra = added.trajectory.calls[-1]
    assert TOY.tool(extra.name).kind is ToolKind.WRITE  # type: ignore[union-attr]
    session_reward = evaluate_trajectory(TOY, task, added.trajectory)
    assert session_reward.value == 0.0 and "STATE" in session_reward.failure_reason


def test_failed_writes_are_not_dropped_and_equivalents_are_not_counted() -> None:
    cancelled = "O10004"  # already cancelled in the seed-0 shop: this write fails
    task = pb.Task(
        id="toy-noop",
        domain="toy",
        checker=pb.Checker(
            gold_actions=[
                tool_call("cancel_order", {"order_id": cancelled, "reason": "mistake"}),
                tool_call("update_address", {"user_id": OWNER, "address": "1 Oak Avenue"}),
                tool_call("update_address", {"user_id": "U1002", "address": "2 Oak Avenue"}),
            ],
            reward_basis=[pb.REWARD_COMPONENT_STATE],
        ),
    )
    assert TOY.initial_state().db.orders[cancelled].status == "cancelled"  # type: ignore[attr-defined]
    gold = gold_trajectory(task)
    made = mutants(TOY, task, gold)
    ops = by_operator(made)
    assert [arguments_of(m.trajectory.calls[0]).get("order_id") for m in ops["drop_write"]] == [cancelled, cancelled]
    assert not ops["reorder_dependent_calls"]  # two users' addresses: the order does not matter
    keys = [_trajectory_key(m.trajectory) for m in made]
    assert _trajectory_key(gold) not in keys and len(set(keys)) == len(keys)


def test_redaction_follows_the_communicate_normalisation() -> None:
    assert _redact("It has SHIPPED.", "shipped") == "It has [redacted]."
    redacted = _redact("The total is $1,000 today.", "$1000")  # matched only once commas are dropped
    assert "$1000" not in redacted.replace(",", "")


# -------------------------------------------------------------------------------------------- user side


class Item(BaseModel):
    item_id: str
    count: int = 0


class Shelf(BaseModel):
    items: dict[str, Item]


class Phone(BaseModel):
    airplane: bool = False
    volume: int = 1


@tool(kind=ToolKind.WRITE)
def restock(shelf: Shelf, item_id: str, count: Annotated[int, Field(ge=1, le=10)]) -> Item:
    if item_id not in shelf.items:
        raise ToolError(f"no item {item_id}")
    shelf.items[item_id].count += count
    return shelf.items[item_id]


@tool(kind=ToolKind.WRITE, side=Side.USER)
def toggle_airplane(phone: Phone) -> bool:
    phone.airplane = not phone.airplane
    return phone.airplane


@tool(kind=ToolKind.WRITE, side=Side.USER)
def set_volume(phone: Phone, level: Annotated[int, Field(ge=0, le=3)]) -> int:
    phone.volume = level
    return level


SHOP = Domain(
    name="dual",
    description="",
    policy="",
    make_state=lambda seed: DomainState(db=Shelf(items={i: Item(item_id=i) for i in ("A", "B", "C")}), user=Phone()),
    tools=collect_tools([restock, toggle_airplane, set_volume]),
)


def test_user_side_writes_keep_their_side_and_numbers_stay_in_range() -> None:
    task = pb.Task(
        id="dual",
        domain="dual",
        checker=pb.Checker(
            gold_actions=[
                tool_call("restock", {"item_id": "A", "count": 2}),
                tool_call("toggle_airplane", side=Side.USER),
                tool_call("set_volume", {"level": 3}, side=Side.USER),
            ],
            reward_basis=[pb.REWARD_COMPONENT_STATE],
        ),
    )
    gold = gold_trajectory(task)
    ops = by_operator(mutants(SHOP, task, gold))
    assert [m.description for m in ops["drop_write"]] == [
        "dropped restock(A, 2)",
        "dropped toggle_airplane()",
        "dropped set_volume(3)",
    ]
    assert [m.description for m in ops["change_argument"]][1:] == [
        "changed restock count: 2 -> 3",
        "changed set_volume level: 3 -> 2",  # 4 would break le=3: the argument validator, not the checker
    ]
    assert ops["change_argument"][0].description in (
        "changed restock item_id: A -> B",
        "changed restock item_id: A -> C",
    )
    assert {c.side for m in ops["change_argument"] for c in m.trajectory.calls if c.name != "restock"} == {
        pb.TOOL_SIDE_USER
    }
    (again,) = ops["add_forbidden_write"]
    assert again.description in (f"added restock({x}, 2) (repeats restock on another entity)" for x in "BC")
    assert not ops["reorder_dependent_calls"]
    report = score_task(SHOP, task)
    assert report.gold_reward == 1.0 and report.score == 1.0


# ---------------------------------------------------------------------------------------------- scores


def test_toy_sample_checkers_kill_every_mutant() -> None:
    reports = {t.id: score_task(TOY, t) for t in TASKS.values()}
    assert {k: (r.mutants, r.killed) for k, r in reports.items()} == {
        "toy-cancel-pending": (4, 4),
        "toy-refuse-shipped": (2, 2),
        "toy-update-address": (4, 4),
        "toy-order-status": (2, 2),
    }
    assert all(r.score == 1.0 and not r.survivors for r in reports.values())
    assert overall_score(list(reports.values())) == 1.0


def test_a_state_only_checker_on_a_task_without_writes_scores_low() -> None:
    strong = TASKS["toy-order-status"]
    delivered = arguments_of(strong.checker.gold_actions[0])["order_id"]
    weak = pb.Task()
    weak.CopyFrom(strong)
    weak.id = "toy-order-status-weak"
    del weak.checker.required_actions[:]
    weak.checker.communicate_info.append(delivered)
    weak.checker.ClearField("reward_basis")
    weak.checker.reward_basis.append(pb.REWARD_COMPONENT_STATE)
    report = score_task(TOY, weak)
    assert report.gold_reward == 1.0
    assert report.mutants == 3 and report.killed == 1 and report.score == pytest.approx(1 / 3)
    assert {s.operator for s in report.survivors} == {"skip_required_message"}
    assert score_task(TOY, strong).score == 1.0


def test_multi_write_survivors_are_the_overwritten_write() -> None:
    report = score_task(TOY, multi_write_task())
    assert report.gold_reward == 1.0
    # The first address is overwritten by the second: neither dropping it nor changing its address changes
    # the final state, and this checker does not look at the calls, so both survive (correctly so).
    assert sorted(s.description for s in report.survivors) == [
        "changed update_address address: 1 Oak Avenue -> 2 Oak Avenue",
        "dropped update_address(U1001, 1 Oak Avenue)",
    ]
    assert report.score == pytest.approx((report.mutants - 2) / report.mutants)


def test_score_edge_cases() -> None:
    assert MutationReport("t", 1.0, 0, 0).score == 1.0  # nothing to kill
    assert MutationReport("t", 0.0, 4, 4).score == 0.0  # rejects gold too: its kills mean nothing
    assert MutationReport("t", 1.0, 4, 3).score == 0.75
    reports = [MutationReport("a", 1.0, 4, 3), MutationReport("b", 1.0, 1, 1), MutationReport("c", 0.0, 5, 5)]
    assert overall_score(reports) == pytest.approx(4 / 10)
    assert overall_score([]) == 1.0


def test_same_seed_same_mutants() -> None:
    task = multi_write_task()
    gold = gold_trajectory(task)

    def run(seed: int) -> list[tuple[str, str, object]]:
        return [(m.operator, m.description, _trajectory_key(m.trajectory)) for m in mutants(TOY, task, gold, seed)]

    assert run(0) == run(0)
    assert any(run(seed) != run(0) for seed in range(1, 6))  # the seed picks the replacement ids
    assert Tally(m[0] for m in run(3)) == Tally(m[0] for m in run(0))  # but not which mutants exist


# ------------------------------------------------------------------------------------------------- CLI


runner = CliRunner()


def test_cli_table_on_toy() -> None:
    result = runner.invoke(checkers_app, ["mutate", "--domain", "toy"])
    assert result.exit_code == 0, result.output
    for task_id in TASKS:
        assert task_id in result.output
    assert "overall mutation score: 1.00 (12/12 mutants killed over 4 task(s))" in result.output


def test_cli_json_for_one_task() -> None:
    result = runner.invoke(checkers_app, ["mutate", "--task", "toy-order-status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["domain"] == "toy" and data["overall_score"] == 1.0
    (task,) = data["tasks"]
    assert task == {
        "task_id": "toy-order-status",
        "gold_reward": 1.0,
        "mutants": 2,
        "killed": 2,
        "score": 1.0,
        "survivors": [],
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--domain", "atlantis"], "unknown domain 'atlantis'"),
        (["--task", "toy-nope"], "no sample task 'toy-nope' in domain 'toy'"),
    ],
)
def test_cli_errors(args: list[str], message: str) -> None:
    result = runner.invoke(checkers_app, ["mutate", *args])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())


def test_cli_domain_without_sample_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    from eigenloop.domains import PATH_VARIABLE, load_domain

    monkeypatch.setenv(PATH_VARIABLE, str(Path(__file__).resolve().parents[1] / "fixtures" / "domains"))
    load_domain.cache_clear()
    try:
        result = runner.invoke(checkers_app, ["mutate", "--domain", "library"])
    finally:
        load_domain.cache_clear()
    assert result.exit_code == 1
    assert "domain 'library' has no built-in sample tasks" in " ".join(result.output.split())
