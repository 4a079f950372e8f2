"""In-process environment semantics: tool schemas, argument validation, initial states, checkers."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from eigenloop.checkers.evaluate import action_matches, diff_states
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import UnknownDomainError, available_domains, load_domain
from eigenloop.domains.base import Domain, DomainState, Side, ToolError, ToolKind, collect_tools, merge_patch, tool
from eigenloop.domains.toy.tasks import sample_tasks
from eigenloop.env.session import EnvSession, InitialStateError, build_initial_state
from eigenloop.protocol import arguments_of, text_message, tool_call

TOY = load_domain("toy")


class Box(BaseModel):
    items: dict[str, int] = {}


class Counter(BaseModel):
    n: int = 0


def test_registry() -> None:
    assert "toy" in available_domains()
    with pytest.raises(UnknownDomainError, match=r"available: .*toy"):
        load_domain("atlantis")


def test_schema_is_derived_from_the_signature() -> None:
    @tool(kind=ToolKind.WRITE)
    def put(
        box: Box,
        name: Annotated[str, Field(description="item name")],
        count: int = 1,
        mode: Literal["add", "set"] = "add",
    ) -> int:
        """Put items in the box."""
        box.items[name] = count if mode == "set" else box.items.get(name, 0) + count
        return box.items[name]

    (made,) = collect_tools([put, len])
    schema = made.json_schema
    assert made.description == "Put items in the box." and made.kind is ToolKind.WRITE and made.side is Side.AGENT
    assert schema["required"] == ["name"]
    assert schema["properties"]["name"]["description"] == "item name"
    assert schema["properties"]["mode"]["enum"] == ["add", "set"]
    assert schema["properties"]["count"]["default"] == 1
    assert made.parse_arguments('{"name": "a", "count": 2}') == {"name": "a", "count": 2, "mode": "add"}


def test_tools_need_typed_parameters() -> None:
    @tool()
    def untyped(db, x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(TypeError, match="needs a type annotation"):
        collect_tools([untyped])


def test_duplicate_tool_names_are_rejected() -> None:
    tools = collect_tools([load_domain("toy").tool("get_order").fn] * 2)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="duplicate tool names"):
        Domain(name="d", description="", policy="", make_state=lambda seed: TOY.initial_state(seed), tools=tools)


def test_sessions_copy_the_state() -> None:
    a, b = EnvSession(TOY), EnvSession(TOY)
    a.call(tool_call("cancel_order", {"order_id": "O10001", "reason": "mistake"}))
    assert a.state_hash() != b.state_hash()
    assert b.state_hash() == TOY.initial_state().hash()


def test_seed_changes_the_generated_state() -> None:
    assert TOY.initial_state(0).hash() == TOY.initial_state(0).hash()
    assert TOY.initial_state(0).hash() != TOY.initial_state(1).hash()


def test_calls_get_ids_and_are_logged() -> None:
    session = EnvSession(TOY)
    result = session.call(tool_call("get_user", {"user_id": "U1001"}))
    assert result.call_id == "call_0" and result.error_kind == pb.TOOL_ERROR_KIND_NONE
    assert [e.call.name for e in session.log] == ["get_user"]


def test_tool_errors_and_unexpected_exceptions_become_results() -> None:
    @tool(kind=ToolKind.WRITE)
    def refuse(db: Counter) -> None:
        raise ToolError("no way")

    @tool(kind=ToolKind.WRITE)
    def crash(db: Counter) -> None:
        raise ZeroDivisionError("boom")

    domain = Domain(
        name="t",
        description="",
        policy="",
        make_state=lambda seed: DomainState(Counter()),
        tools=collect_tools([refuse, crash]),
    )
    session = EnvSession(domain)
    assert session.call(tool_call("refuse")).content == "Error: no way"
    crashed = session.call(tool_call("crash"))
    assert crashed.error and "ZeroDivisionError: boom" in crashed.content
    no_user = session.call(pb.ToolCall(name="refuse", side=pb.TOOL_SIDE_USER))
    assert no_user.error_kind == pb.TOOL_ERROR_KIND_WRONG_SIDE


def test_merge_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}, "f": [1]}) == {
        "a": 1,
        "b": {"d": 3, "e": 4},
        "f": [1],
    }
    assert merge_patch({"a": 1}, "x") == "x"


def test_initial_state_patch_and_actions() -> None:
    initial = pb.InitialState(
        data_patch_json=json.dumps({"db": {"users": {"U1001": {"address": "1 New Road"}}}}),
        actions=[tool_call("cancel_order", {"order_id": "O10001", "reason": "mistake"})],
    )
    state = build_initial_state(TOY, initial)
    assert state.db.users["U1001"].address == "1 New Road"  # type: ignore[attr-defined]
    assert state.db.orders["O10001"].status == "cancelled"  # type: ignore[attr-defined]
    assert TOY.initial_state().db.orders["O10001"].status == "pending"  # type: ignore[attr-defined]
    with pytest.raises(InitialStateError, match="unknown sections"):
        build_initial_state(TOY, pb.InitialState(data_patch_json='{"dbb": {}}'))
    with pytest.raises(InitialStateError, match="JSON object"):
        build_initial_state(TOY, pb.InitialState(data_patch_json="[1]"))


def test_checker_components_and_basis() -> None:
    task = sample_tasks()[1]  # refuse a shipped order: state + action + communicate
    session = EnvSession(TOY, task=task)
    session.call(tool_call("get_order", {"order_id": "O10002"}))
    told = [text_message(pb.ROLE_ASSISTANT, "Sorry, order O10002 has Shipped, so it cannot be cancelled.")]
    assert session.evaluate(told).value == 1.0
    only_user_said_it = [text_message(pb.ROLE_USER, "it shipped")]
    reward = session.evaluate(only_user_said_it)
    assert reward.value == 0.0 and reward.failure_reason.startswith("REWARD_COMPONENT_COMMUNICATE")
    session.call(tool_call("cancel_order", {"order_id": "O10002", "reason": "found_cheaper"}))
    broken = session.evaluate(told)
    assert broken.value == 0.0
    components = {b.component: b for b in broken.breakdown}
    assert components[pb.REWARD_COMPONENT_STATE].value == 0.0
    assert "forbidden cancel_order" in components[pb.REWARD_COMPONENT_ACTION].detail
    assert "db.orders.O10002.status" in broken.state_diff


def test_components_outside_the_basis_are_diagnostics() -> None:
    task = sample_tasks()[0]
    checker = pb.Checker()
    checker.CopyFrom(task.checker)
    checker.communicate_info.append("refund")
    session = EnvSession(TOY, task=task)
    for call in task.checker.gold_actions:
        session.call(call)
    reward = session.evaluate([], checker)
    diagnostics = {b.component: b for b in reward.breakdown}
    assert reward.value == 1.0
    assert (
        diagnostics[pb.REWARD_COMPONENT_COMMUNICATE].value == 0.0
        and not diagnostics[pb.REWARD_COMPONENT_COMMUNICATE].in_basis
    )


def test_unjudged_components_are_listed_unchecked_never_passed() -> None:
    session = EnvSession(TOY)
    checker = pb.Checker(
        nl_assertions=["agent was polite"], reward_basis=[pb.REWARD_COMPONENT_STATE, pb.REWARD_COMPONENT_NL_ASSERTION]
    )
    reward = session.evaluate([], checker)
    assert list(reward.unchecked) == [pb.REWARD_COMPONENT_NL_ASSERTION]
    nl = next(b for b in reward.breakdown if b.component == pb.REWARD_COMPONENT_NL_ASSERTION)
    assert not nl.checked and nl.value == 0.0
    assert not reward.checker_error


@pytest.mark.parametrize(
    "checker",
    [
        pb.Checker(assertions=[pb.StateAssertion(function="assert_nothing")]),
        pb.Checker(assertions=[pb.StateAssertion(function="assert_order_status", arguments_json='{"bad": 1}')]),
    ],
    ids=["unknown-assertion", "assertion-raises"],
)
def test_broken_checkers_are_checker_errors_with_value_zero(checker: pb.Checker) -> None:
    reward = EnvSession(TOY).evaluate([], checker)
    assert reward.checker_error and reward.value == 0.0 and reward.failure_reason


def test_a_basis_component_with_nothing_to_check_holds_as_in_tau2() -> None:
    reward = EnvSession(TOY).evaluate([], pb.Checker(reward_basis=[pb.REWARD_COMPONENT_COMMUNICATE]))
    assert reward.value == 1.0 and not reward.checker_error
    assert [b.detail for b in reward.breakdown if b.in_basis] == ["REWARD_COMPONENT_COMMUNICATE: nothing required"]


def test_evaluation_is_deterministic() -> None:
    task = sample_tasks()[2]
    rewards = []
    for _ in range(3):
        session = EnvSession(TOY, task=task)
        session.call(tool_call("update_address", {"user_id": "U1001", "address": "255 Elm St"}))
        rewards.append(session.evaluate([]).SerializeToString(deterministic=True))
    assert len(set(rewards)) == 1


@pytest.mark.parametrize(
    ("match", "taken", "expected"),
    [
        (pb.ActionMatch(call=tool_call("f", {"a": 1, "b": 2}), match=pb.ARGUMENT_MATCH_ALL), {"a": 1}, True),
        (pb.ActionMatch(call=tool_call("f", {"a": 1, "b": 2}), match=pb.ARGUMENT_MATCH_ALL), {"a": 1, "c": 3}, False),
        (
            pb.ActionMatch(call=tool_call("f", {"a": 1}), match=pb.ARGUMENT_MATCH_LISTED, compare_args=["a"]),
            {"a": 1, "z": 0},
            True,
        ),
        (
            pb.ActionMatch(call=tool_call("f", {"a": 1}), match=pb.ARGUMENT_MATCH_LISTED, compare_args=["a"]),
            {"a": 2},
            False,
        ),
        (pb.ActionMatch(call=tool_call("f", {"a": 1}), match=pb.ARGUMENT_MATCH_NAME_ONLY), {"a": 9}, True),
    ],
)
def test_action_matching_follows_tau2(match: pb.ActionMatch, taken: dict[str, int], expected: bool) -> None:
    assert action_matches(match, tool_call("f", taken)) is expected
    assert not action_matches(match, tool_call("g", taken))


def test_action_matching_checks_the_side_when_the_expectation_names_one() -> None:
    transfer = pb.ActionMatch(call=pb.ToolCall(name="transfer"), match=pb.ARGUMENT_MATCH_NAME_ONLY)
    assert action_matches(transfer, tool_call("transfer", side=Side.USER))  # no side expected: tau2's rule
    transfer.call.side = pb.TOOL_SIDE_AGENT
    assert action_matches(transfer, tool_call("transfer"))
    assert not action_matches(transfer, tool_call("transfer", side=Side.USER))


def test_diff_is_readable_and_bounded() -> None:
    lines = diff_states({"a": {"x": 1, "y": [1, 2]}, "gone": 1}, {"a": {"x": 2, "y": [1, 3]}, "new": 2})
    assert lines == ["a.x: 1 (expected 2)", "a.y[1]: 2 (expected 3)", "gone: unexpected 1", "new: missing (expected 2)"]
    many = diff_states({str(i): i for i in range(100)}, {str(i): -i for i in range(1, 101)})
    assert len(many) == 20


@pytest.mark.parametrize("arguments", ["[" * 5000, "{" * 5000, "not json", "[1, 2]", ""])
def test_arguments_that_are_not_an_object_read_as_empty(arguments: str) -> None:
    # Regression (found by fuzzing a Session): brackets nested past the interpreter's stack raised RecursionError
    # while the checker read the calls of the conversation, and the stream ended UNKNOWN.
    call = pb.ToolCall(name="get_user", arguments_json=arguments)
    assert arguments_of(call) == {}


def test_a_patch_nested_past_the_stack_is_an_initial_state_error() -> None:
    with pytest.raises(InitialStateError, match="not JSON"):
        build_initial_state(load_domain("toy"), pb.InitialState(data_patch_json="[" * 5000))
