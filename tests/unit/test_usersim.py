"""The in-process user simulator: conversations, the procedural and LLM users, and the validity checker."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as us
from eigenloop.domains import load_domain, sample_tasks
from eigenloop.domains.base import Domain, Side
from eigenloop.env.session import EnvSession
from eigenloop.llm.base import BackendError, ChatMessage, Completion, ToolCallRequest, Usage
from eigenloop.protocol import arguments_of, tool_call
from eigenloop.usersim import (
    OUT_OF_SCOPE_TOKEN,
    STOP_TOKEN,
    TRANSFER_TOKEN,
    Conversation,
    ConversationError,
    LatencyUser,
    LLMUser,
    ProceduralUser,
    UserPolicy,
    UserSimError,
    check_turn,
    id_like_tokens,
    make_policy,
    system_prompt,
)

DOMAINS = ("toy", "airline", "retail", "telecom")


@cache
def _tasks(domain: str) -> tuple[pb.Task, ...]:
    return tuple(sample_tasks(domain))


def _task(domain: str, task_id: str) -> pb.Task:
    return next(t for t in _tasks(domain) if t.id == task_id)


# ---------------------------------------------------------------------------------------------------------------
# A scripted agent: replays assistant turns (executing its tool calls) against the user simulator
# ---------------------------------------------------------------------------------------------------------------


def _assistant(text: str = "", *calls: pb.ToolCall) -> pb.Message:
    return pb.Message(role=pb.ROLE_ASSISTANT, content=text, tool_calls=list(calls))


def _gold_argument(task: pb.Task, tool: str, key: str) -> str:
    call = next(c for c in task.checker.gold_actions if c.name == tool)
    value = arguments_of(call)[key]
    assert isinstance(value, str)
    return value


def toy_script(task: pb.Task) -> list[pb.Message]:
    """Toy tasks have no reference dialogue: these are the agent's side of one, written from the gold actions."""
    if task.id == "toy-cancel-pending":
        order = _gold_argument(task, "cancel_order", "order_id")
        return [
            _assistant("I can help with that. Which order is it? Please give me the order id."),
            _assistant("", tool_call("get_order", {"order_id": order})),
            _assistant(f"Order {order} is pending, so it can be cancelled. May I ask why you want to cancel it?"),
            _assistant(f"To confirm: I will cancel order {order} with the reason 'mistake'. Shall I proceed?"),
            _assistant("", tool_call("cancel_order", {"order_id": order, "reason": "mistake"})),
            _assistant(f"Order {order} is now cancelled."),
        ]
    if task.id == "toy-refuse-shipped":
        order = _gold_argument(task, "get_order", "order_id")
        return [
            _assistant("I can help with that. Could you tell me the order id?"),
            _assistant("", tool_call("get_order", {"order_id": order})),
            _assistant(f"I'm sorry, but order {order} has already shipped, so I can't cancel it."),
        ]
    if task.id == "toy-update-address":
        user = _gold_argument(task, "update_address", "user_id")
        address = _gold_argument(task, "update_address", "address")
        return [
            _assistant("Sure. Could you give me your user id?"),
            _assistant("", tool_call("get_user", {"user_id": user})),
            _assistant("Thanks. What is your new address?"),
            _assistant(f"I will change the address on account {user} to {address}. Shall I proceed?"),
            _assistant("", tool_call("update_address", {"user_id": user, "address": address})),
            _assistant(f"Done: your address is now {address}."),
        ]
    if task.id == "toy-order-status":
        order = _gold_argument(task, "get_order", "order_id")
        return [
            _assistant("", tool_call("get_order", {"order_id": order})),
            _assistant(f"Order {order} has been delivered."),
        ]
    raise AssertionError(f"no script for {task.id}")


def agent_script(task: pb.Task) -> list[pb.Message]:
    if task.domain == "toy":
        return toy_script(task)
    return [m for m in task.reference_dialogue if m.role == pb.ROLE_ASSISTANT]


@dataclass
class Replay:
    conversation: Conversation
    env: EnvSession
    turns: list[us.UserTurn] = field(default_factory=list)
    user_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def replay(task: pb.Task, policy: UserPolicy | None = None, *, seed: int = 0, max_turns: int = 60) -> Replay:
    """Drive a Conversation with the scripted agent; the user's tool calls run in an EnvSession."""
    domain = load_domain(task.domain)
    env = EnvSession(domain, task=task)
    conv = Conversation(policy or ProceduralUser(), task, domain=domain, seed=seed, max_turns=max_turns)
    run = Replay(conv, env)
    turn = conv.open()
    run.turns.append(turn)
    for message in agent_script(task):
        if turn.stop:
            break
        for call in message.tool_calls:
            assert not env.call(call).error
        if not message.content:
            continue
        turn = conv.agent_message(message.content)
        run.turns.append(turn)
        while turn.tool_calls and not turn.stop:
            results = []
            for call in turn.tool_calls:
                run.user_calls.append((call.name, json.loads(call.arguments_json)))
                results.append(env.call(call))
            turn = conv.tool_results(results)
            run.turns.append(turn)
    return run


def reference_user_calls(task: pb.Task) -> list[tuple[str, dict[str, Any]]]:
    if task.domain == "toy":  # the gold actions list the user's own calls
        calls = [c for c in task.checker.gold_actions if c.side == pb.TOOL_SIDE_USER]
    else:
        calls = [c for m in task.reference_dialogue if m.role == pb.ROLE_USER for c in m.tool_calls]
    return [(c.name, arguments_of(c)) for c in calls]


def expected_stop(task: pb.Task) -> us.StopReason.ValueType:
    """From the agent's side of the script: a transfer, a refusal, or a request carried out."""
    script = agent_script(task)
    if any(c.name.startswith("transfer_to_human") for m in script for c in m.tool_calls):
        return us.STOP_REASON_TRANSFERRED
    final = [m.content for m in script if m.content][-1]
    if re.search(r"can't|cannot|can not|afraid not|not eligible", final):
        return us.STOP_REASON_GOAL_UNACHIEVABLE
    return us.STOP_REASON_GOAL_MET


ALL_TASKS = [(d, t.id) for d in DOMAINS for t in _tasks(d)]


@pytest.mark.parametrize(("domain", "task_id"), ALL_TASKS, ids=[t for _, t in ALL_TASKS])
def test_procedural_user_completes_every_sample_task(domain: str, task_id: str) -> None:
    task = _task(domain, task_id)
    run = replay(task)
    conv = run.conversation
    assert conv.valid, conv.violations
    assert all(t.validity.valid for t in run.turns)
    assert run.user_calls == reference_user_calls(task)
    assert conv.stopped, [t.content for t in run.turns]
    assert conv.stop_reason == expected_stop(task), [t.content for t in run.turns]
    assert conv.turn_count < conv.max_turns
    token = TRANSFER_TOKEN if conv.stop_reason == us.STOP_REASON_TRANSFERRED else STOP_TOKEN
    assert run.turns[-1].content.endswith(token)


def test_every_domain_has_sample_tasks() -> None:
    assert all(_tasks(d) for d in DOMAINS)
    assert sum(1 for d, _ in ALL_TASKS if d == "telecom") > 0


def test_opening_states_the_goal_and_the_ids_the_user_knows() -> None:
    airline = replay(_task("airline", "airline-cancel_reservation-1"))
    first = airline.turns[0].content
    assert "cancel my reservation H45Z3K" in first and "mateo_sato_5867" in first
    telecom = _tasks("telecom")[0]
    opening = Conversation(ProceduralUser(), telecom).open().content
    assert "No Service" in opening and "555-781-4230" in opening
    assert "customer" not in opening.lower()  # unknown_info: no customer id to give


def test_telecom_device_actions_run_one_at_a_time_and_results_are_reported() -> None:
    task = _task("telecom", "telecom-mms-1")
    run = replay(task)
    names = [c[0] for c in run.user_calls]
    assert names[names.index("reset_apn_settings") + 1] == "reboot_device"
    assert all(len(t.tool_calls) <= 1 for t in run.turns)
    reports = [t.content for t in run.turns if t.content.startswith(("It says:", "Done."))]
    assert any("MMSC URL: Not set" in r for r in reports)
    assert any("Phone restarted." in r for r in reports)


def test_unknown_fact_is_looked_up_with_a_user_tool_and_answered_from_its_result() -> None:
    task = _task("toy", "toy-refuse-shipped")
    run = replay(task)
    order = _gold_argument(task, "get_order", "order_id")
    assert run.turns[1].tool_calls[0].name == "read_emails"
    assert run.turns[2].content == f"The order id is {order}."
    assert run.turns[2].validity.valid  # the id came from the user's own tool result


def test_procedural_user_says_it_does_not_know_what_the_scenario_does_not_give() -> None:
    conv = Conversation(ProceduralUser(), _task("telecom", "telecom-no_service-1"))
    conv.open()
    turn = conv.agent_message("Could you give me your customer id?")
    assert turn.content == "I'm sorry, I don't have my customer id at hand. My phone number is 555-781-4230."
    assert turn.validity.valid and not turn.stop


def test_procedural_user_handles_common_agent_moves() -> None:
    conv = Conversation(ProceduralUser(), _task("airline", "airline-book_reservation-1"))
    goal = conv.open().content
    assert conv.agent_message("Hi! How can I help you today?").content in goal  # restates the goal
    assert conv.agent_message("Could you please provide your user ID?").content == "My user id is priya_rossi_9633."
    dob = conv.agent_message("Can you confirm the passenger's date of birth?")
    assert dob.content == "The date of birth is 1986-04-20."  # a fact, not a "yes, go ahead"
    assert conv.agent_message("Please hold on while I check.").content == "Okay, thanks."
    assert conv.agent_message("What is your membership level?").content.startswith("I'm not sure")
    end = conv.agent_message("Your reservation is booked. Is there anything else I can help you with?")
    assert end.stop and end.stop_reason == us.STOP_REASON_GOAL_MET
    assert conv.valid, conv.violations


def test_procedural_user_offers_another_identity_fact_when_it_lacks_the_one_asked() -> None:
    conv = Conversation(ProceduralUser(), _task("retail", "retail-cancel_with_invalid_reason-1"))
    conv.open()
    turn = conv.agent_message("Could you tell me your name and zip code?")
    assert turn.content == (
        "I'm sorry, I don't have my name or zip code at hand. My email address is diego.chowdhury6097@example.com."
    )


def test_a_question_about_the_device_is_answered_by_looking_at_it() -> None:
    conv = Conversation(ProceduralUser(), _task("telecom", "telecom-no_service-1"))
    conv.open()
    turn = conv.agent_message("What does your status bar show?")
    assert [c.name for c in turn.tool_calls] == ["check_status_bar"]


def test_procedural_user_refuses_what_the_instruction_rules_out() -> None:
    conv = Conversation(ProceduralUser(), _task("telecom", "telecom-mobile_data-1"))
    conv.open()
    turn = conv.agent_message("I can change your plan to our unlimited plan. Shall I go ahead?")
    assert turn.content == "No, I don't want to change my mobile data plan."
    assert not turn.stop


def test_procedural_user_insists_once_when_told_to() -> None:
    conv = Conversation(ProceduralUser(), _task("airline", "airline-compensation_not_allowed-1"))
    conv.open()
    first = conv.agent_message("I'm sorry, but you are not eligible for compensation.")
    assert not first.stop and "exception" in first.content
    second = conv.agent_message("I'm afraid I still can't offer any compensation.")
    assert second.stop and second.stop_reason == us.STOP_REASON_GOAL_UNACHIEVABLE


def test_agent_stop_token_ends_the_conversation_as_goal_met() -> None:
    conv = Conversation(ProceduralUser(), _task("toy", "toy-order-status"))
    conv.open()
    turn = conv.agent_message(f"It was delivered. {STOP_TOKEN}")
    assert turn.stop and turn.stop_reason == us.STOP_REASON_GOAL_MET and turn.validity.valid


# ---------------------------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------------------------


def _serialized(run: Replay) -> list[bytes]:
    return [t.SerializeToString(deterministic=True) for t in run.turns]


@pytest.mark.parametrize("task_id", ["telecom-overdue_bill_suspension-2", "telecom-mms-3"])
def test_same_seed_same_turns(task_id: str) -> None:
    task = _task("telecom", task_id)
    assert _serialized(replay(task, seed=7)) == _serialized(replay(task, seed=7))
    histories = [replay(task, seed=7).conversation.history for _ in range(2)]
    assert [m.SerializeToString(deterministic=True) for m in histories[0]] == [
        m.SerializeToString(deterministic=True) for m in histories[1]
    ]


def test_seed_varies_only_the_phrasing() -> None:
    task = _task("retail", "retail-cancel_pending_order-1")
    runs = [replay(task, seed=s) for s in range(6)]
    assert len({tuple(_serialized(r)) for r in runs}) > 1
    assert {r.conversation.stop_reason for r in runs} == {us.STOP_REASON_GOAL_MET}
    assert {len(r.turns) for r in runs} == {len(runs[0].turns)}


# ---------------------------------------------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------------------------------------------


def _telecom_pending() -> tuple[Conversation, us.UserTurn]:
    conv = Conversation(ProceduralUser(), _task("telecom", "telecom-no_service-1"))
    conv.open()
    turn = conv.agent_message("Could you check the status bar at the top of your screen?")
    assert [c.name for c in turn.tool_calls] == ["check_status_bar"]
    return conv, turn


def test_open_twice_is_an_error() -> None:
    conv = Conversation(ProceduralUser(), _task("toy", "toy-order-status"))
    conv.open()
    with pytest.raises(ConversationError, match="open\\(\\) called twice"):
        conv.open()


def test_messages_before_open_are_errors() -> None:
    conv = Conversation(ProceduralUser(), _task("toy", "toy-order-status"))
    with pytest.raises(ConversationError, match="before open\\(\\)"):
        conv.agent_message("hello")
    with pytest.raises(ConversationError, match="before open\\(\\)"):
        conv.tool_results([])


def test_nothing_after_stop() -> None:
    conv = Conversation(ProceduralUser(), _task("toy", "toy-order-status"))
    conv.open()
    assert conv.agent_message("Order O10003 has been delivered.").stop
    with pytest.raises(ConversationError, match="after the user stopped \\(STOP_REASON_GOAL_MET\\)"):
        conv.agent_message("Anything else?")
    with pytest.raises(ConversationError, match="over"):
        conv.tool_results([])


def test_tool_results_when_none_were_requested() -> None:
    conv = Conversation(ProceduralUser(), _task("toy", "toy-order-status"))
    conv.open()
    with pytest.raises(ConversationError, match="requested no tool calls"):
        conv.tool_results([pb.ToolResult(call_id="x", content="{}")])


def test_tool_results_must_answer_exactly_the_pending_calls() -> None:
    conv, turn = _telecom_pending()
    call_id = turn.tool_calls[0].id
    assert call_id
    with pytest.raises(ConversationError, match="unknown call id 'nope'"):
        conv.tool_results([pb.ToolResult(call_id="nope", content="x")])
    with pytest.raises(ConversationError, match=f"missing tool results for call ids \\[{call_id}\\]"):
        conv.tool_results([])
    with pytest.raises(ConversationError, match="two tool results"):
        conv.tool_results([pb.ToolResult(call_id=call_id, content="x")] * 2)
    # The failed calls changed nothing: the right result is still accepted.
    reply = conv.tool_results([pb.ToolResult(call_id=call_id, content="Status Bar: Airplane Mode")])
    assert reply.content == "It says: Status Bar: Airplane Mode"
    assert conv.history[-2].role == pb.ROLE_TOOL and conv.history[-2].tool_result.name == "check_status_bar"


def test_agent_message_while_tool_results_are_pending() -> None:
    conv, turn = _telecom_pending()
    with pytest.raises(ConversationError, match=f"tool calls \\[{turn.tool_calls[0].id}\\] wait for results"):
        conv.agent_message("Hello?")
    assert [c.id for c in conv.pending_calls] == [turn.tool_calls[0].id]


def test_max_turns_ends_with_a_max_turns_stop() -> None:
    conv = Conversation(ProceduralUser(), _task("retail", "retail-cancel_pending_order-1"), max_turns=3)
    conv.open()
    conv.agent_message("Could you give me your email address?")
    turn = conv.agent_message("Why do you want to cancel it?")
    assert turn.stop and turn.stop_reason == us.STOP_REASON_MAX_TURNS
    assert turn.content == STOP_TOKEN and turn.validity.valid
    assert conv.turn_count == 3
    with pytest.raises(ConversationError):
        conv.agent_message("Hello?")


def test_history_roles_and_turn_count() -> None:
    conv, turn = _telecom_pending()
    conv.tool_results([pb.ToolResult(call_id=turn.tool_calls[0].id, content="Status Bar: OK")])
    roles = [m.role for m in conv.history]
    assert roles == [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_USER, pb.ROLE_TOOL, pb.ROLE_USER]
    assert conv.turn_count == 3 and conv.valid and not conv.violations
    assert conv.history[2].tool_calls[0].side == pb.TOOL_SIDE_USER


def test_domain_defaults_to_the_tasks_domain() -> None:
    task = _task("telecom", "telecom-no_service-1")
    assert Conversation(ProceduralUser(), task).domain is load_domain("telecom")
    unknown = pb.Task(id="x", domain="no-such-domain", user=pb.UserScenario(instruction="You want help."))
    assert Conversation(ProceduralUser(), unknown).domain is None


def test_from_open_request() -> None:
    task = _task("toy", "toy-order-status")
    request = us.OpenConversation(
        task=task, sampling=pb.SamplingParams(temperature=0.7, seed=3), episode_id="ep-1", max_turns=4
    )
    conv = Conversation.from_open(ProceduralUser(), request)
    assert (conv.seed, conv.max_turns, conv.episode_id, conv.sampling.temperature) == (3, 4, "ep-1", 0.7)
    assert Conversation.from_open(ProceduralUser(), us.OpenConversation(task=task)).max_turns == 50
    assert Conversation(ProceduralUser(), task).sampling.temperature == 0.0
    assert Conversation(ProceduralUser(), task, temperature=0.3).sampling.temperature == 0.3


# ---------------------------------------------------------------------------------------------------------------
# Validity rules
# ---------------------------------------------------------------------------------------------------------------


def _check(
    turn: us.UserTurn, *, task: pb.Task | None = None, domain: Domain | None = None, history: Sequence[pb.Message] = ()
) -> list[str]:
    task = task or _task("retail", "retail-cancel_pending_order-1")
    return list(check_turn(turn, task=task, domain=domain, history=history).violations)


def test_id_like_tokens() -> None:
    text = (
        "Order #W5861863, user mateo_sato_5867, card gift_card_4130601, reservation H45Z3K, flight HAT095, "
        "maya.xu9167@example.com, 555-781-4230, item 4185037723, but not $1,157.40, 2024-05-29, 4G or 12:30."
    )
    tokens = [t for _, t in id_like_tokens(text)]
    assert tokens == [
        "#W5861863",
        "mateo_sato_5867",
        "gift_card_4130601",
        "H45Z3K",
        "HAT095",
        "maya.xu9167@example.com",
        "555-781-4230",
        "4185037723",
    ]


def test_rule_1_reveals_only_what_the_user_may_know() -> None:
    task = _task("retail", "retail-cancel_pending_order-1")
    assert _check(us.UserTurn(content="My email is maya.xu9167@example.com, order #W5861863.")) == []
    violations = _check(us.UserTurn(content="My user id is maya_xu_1279 and my phone is 555-123-4567."))
    assert violations == [
        "revealed an id not in the scenario or conversation: maya_xu_1279",
        "revealed a phone number not in the scenario or conversation: 555-123-4567",
    ]
    assert _check(us.UserTurn(content="The item is 6828922087."))  # an item id the user was never shown
    assert _check(us.UserTurn(content="Or was it #W586186?"))  # a prefix of a known id is not known
    shown = [pb.Message(role=pb.ROLE_ASSISTANT, content="Your user id is maya_xu_1279.")]
    assert _check(us.UserTurn(content="Yes, maya_xu_1279 is me."), task=task, history=shown) == []
    result = pb.ToolResult(call_id="c", name="read_emails", content='{"subject": "Your order O10002"}')
    from_tool = [pb.Message(role=pb.ROLE_TOOL, content=result.content, tool_result=result)]
    assert _check(us.UserTurn(content="It is O10002."), history=from_tool) == []
    # What the user says itself does not count as knowledge: only the agent's messages and tool results do.
    said = [pb.Message(role=pb.ROLE_USER, content="My id is Z99999.")]
    assert _check(us.UserTurn(content="Z99999"), history=said)


@pytest.mark.parametrize(
    "text",
    [
        "How can I help you today?",
        "As an AI, I cannot do that.",
        "Thank you for contacting us!",
        "I've cancelled your order.",
    ],
)
def test_rule_2_assistant_style_text(text: str) -> None:
    violations = _check(us.UserTurn(content=text))
    assert any(v.startswith("answered as the agent") for v in violations), violations


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "check_status_bar", "arguments": {}}</tool_call>',
        'Sure: {"name": "toggle_data", "arguments": {}}',
        "<function=reboot_device>{}</function>",
    ],
)
def test_rule_2_tool_markup_in_text(text: str) -> None:
    assert "tool-call markup in the message text" in _check(us.UserTurn(content=text))


def test_rule_2_agent_tool_named_in_text() -> None:
    toy, task = load_domain("toy"), _task("toy", "toy-cancel-pending")
    violations = _check(us.UserTurn(content="Please run cancel_order(order_id='O10001')."), task=task, domain=toy)
    assert violations == ["named the agent tool cancel_order in the message text"]
    assert _check(us.UserTurn(content="Please cancel my order O10001."), task=task, domain=toy) == []


def test_rule_3_user_calls_only_user_tools() -> None:
    toy = load_domain("toy")
    user_call = tool_call("read_emails", side=Side.USER, call_id="c1")
    assert _check(us.UserTurn(tool_calls=[user_call]), domain=toy) == []
    agent_call = tool_call("get_order", {"order_id": "O10001"}, side=Side.USER, call_id="c2")
    assert _check(us.UserTurn(tool_calls=[agent_call]), domain=toy) == [
        "called the agent tool get_order (the agent's job)"
    ]
    assert _check(us.UserTurn(tool_calls=[tool_call("teleport", side=Side.USER, call_id="c3")]), domain=toy) == [
        "called unknown tool teleport"
    ]
    # A domain without user tools (or none at all): any user tool call is a violation.
    assert _check(us.UserTurn(tool_calls=[user_call]), domain=None) == [
        "called read_emails, but this domain has no user tools"
    ]
    assert _check(us.UserTurn(tool_calls=[user_call]), domain=load_domain("retail")) == [
        "called read_emails, but this domain has no user tools"
    ]
    bad_json = pb.ToolCall(id="c4", name="read_emails", arguments_json="[1]", side=pb.TOOL_SIDE_USER)
    assert _check(us.UserTurn(tool_calls=[bad_json]), domain=toy) == ["arguments of read_emails are not a JSON object"]


def test_rule_4_termination() -> None:
    assert _check(us.UserTurn(content="  ")) == ["empty message: no text, no tool calls and no stop"]
    assert _check(
        us.UserTurn(
            content=f"Thanks! {STOP_TOKEN} Also, one more thing", stop=True, stop_reason=us.STOP_REASON_GOAL_MET
        )
    ) == [f"text after the stop token {STOP_TOKEN}"]
    assert _check(us.UserTurn(content=f"Thanks! {STOP_TOKEN}", stop=True)) == ["stop without a reason"]
    assert _check(us.UserTurn(content=f"Thanks! {STOP_TOKEN}")) == [
        f"stop token {STOP_TOKEN} but the turn does not stop"
    ]
    assert _check(us.UserTurn(content=TRANSFER_TOKEN, stop=True, stop_reason=us.STOP_REASON_GOAL_MET)) == [
        f"stop reason STOP_REASON_GOAL_MET does not fit the stop token {TRANSFER_TOKEN}"
    ]
    ok = [
        us.UserTurn(content=f"Thanks! {STOP_TOKEN}", stop=True, stop_reason=us.STOP_REASON_GOAL_MET),
        us.UserTurn(content=TRANSFER_TOKEN, stop=True, stop_reason=us.STOP_REASON_TRANSFERRED),
        us.UserTurn(content="", stop=True, stop_reason=us.STOP_REASON_MAX_TURNS),
        us.UserTurn(content="Yes, please."),
    ]
    assert all(_check(t) == [] for t in ok)


def test_conversation_flags_an_invalid_policy_turn() -> None:
    class Leaky:
        name = "leaky"

        def next_turn(self, view: object) -> us.UserTurn:
            return us.UserTurn(content="How can I help you? My user id is zed_zed_9999.")

    conv = Conversation(Leaky(), _task("retail", "retail-cancel_pending_order-1"))
    turn = conv.open()
    assert not turn.validity.valid and len(turn.validity.violations) == 2
    assert not conv.valid and conv.violations[0].startswith("turn 1: ")


# ---------------------------------------------------------------------------------------------------------------
# LLMUser with a scripted fake backend
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FakeBackend:
    """A ChatBackend that returns scripted completions (or raises scripted errors) and records every call."""

    script: list[Completion | BackendError]
    name: str = "fake"
    usage: Usage = field(default_factory=Usage)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
    ) -> Completion:
        self.calls.append(
            {
                "messages": list(messages),
                "tools": tools,
                "temperature": temperature,
                "max_tokens": max_tokens,
                "seed": seed,
            }
        )
        item = self.script.pop(0)
        if isinstance(item, BackendError):
            raise item
        self.usage.add(item)
        return item


def said(text: str, *calls: ToolCallRequest) -> Completion:
    return Completion(text, tuple(calls), "tool_calls" if calls else "stop", 10, 5, "fake")


def test_llm_user_maps_stop_tokens() -> None:
    task = _task("retail", "retail-cancel_pending_order-1")
    backend = FakeBackend([said("Hi, I'd like to cancel order #W5861863."), said(f"Great, thanks! {STOP_TOKEN}")])
    conv = Conversation(LLMUser(backend), task)
    assert conv.open().content == "Hi, I'd like to cancel order #W5861863."
    turn = conv.agent_message("Order #W5861863 is now cancelled.")
    assert turn.stop and turn.stop_reason == us.STOP_REASON_GOAL_MET and turn.validity.valid

    for text, reason in [
        (TRANSFER_TOKEN, us.STOP_REASON_TRANSFERRED),
        (OUT_OF_SCOPE_TOKEN, us.STOP_REASON_OUT_OF_SCOPE),
        (f"Okay, I understand. {STOP_TOKEN}", us.STOP_REASON_GOAL_UNACHIEVABLE),
    ]:
        conv = Conversation(LLMUser(FakeBackend([said("Hi."), said(text)])), task)
        conv.open()
        turn = conv.agent_message("I'm sorry, but I can't cancel it. YOU ARE BEING TRANSFERRED.")
        assert (turn.stop, turn.stop_reason, turn.validity.valid) == (True, reason, True)


def test_llm_user_calls_user_tools_and_sees_the_conversation_from_the_user_side() -> None:
    task = _task("telecom", "telecom-no_service-1")
    backend = FakeBackend(
        [
            said("Hi, my phone shows No Service. My number is 555-781-4230."),
            said("", ToolCallRequest("c1", "check_status_bar", "{}")),
            said("It says Airplane Mode."),
        ]
    )
    conv = Conversation(LLMUser(backend), task)
    conv.open()
    turn = conv.agent_message("Could you check your status bar?")
    assert [(c.id, c.name, c.side) for c in turn.tool_calls] == [("c1", "check_status_bar", pb.TOOL_SIDE_USER)]
    assert turn.validity.valid
    turn = conv.tool_results([pb.ToolResult(call_id="c1", content="Status Bar: Airplane Mode")])
    assert turn.content == "It says Airplane Mode." and turn.validity.valid

    last = backend.calls[-1]
    roles = [m.role for m in last["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "tool"]
    assert last["messages"][3].content == "Could you check your status bar?"
    assert last["messages"][4].tool_calls == (ToolCallRequest("c1", "check_status_bar", "{}"),)
    assert last["messages"][5].tool_call_id == "c1"
    tool_names = {t["function"]["name"] for t in last["tools"]}
    assert "check_status_bar" in tool_names and "get_customer_by_phone" not in tool_names
    assert last["temperature"] == 0.0 and last["seed"] == 0


def test_llm_user_uses_the_sampling_temperature_when_opened_with_one() -> None:
    backend = FakeBackend([said("Hello.")])
    sampling = pb.SamplingParams(temperature=0.8, max_new_tokens=64, seed=11)
    Conversation(LLMUser(backend), _task("toy", "toy-order-status"), sampling=sampling).open()
    assert (backend.calls[0]["temperature"], backend.calls[0]["max_tokens"], backend.calls[0]["seed"]) == (0.8, 64, 11)
    assert backend.calls[0]["tools"] is not None  # toy has a user tool (read_emails)


@pytest.mark.parametrize(
    ("completion", "violation"),
    [
        (said(""), "empty message: no text, no tool calls and no stop"),
        (
            said('<tool_call>{"name": "read_emails", "arguments": {}}</tool_call>'),
            "tool-call markup in the message text",
        ),
        (said(f"Bye {STOP_TOKEN} and another thing"), f"text after the stop token {STOP_TOKEN}"),
        (
            said("", ToolCallRequest("c9", "cancel_order", "{not json")),
            "called the agent tool cancel_order (the agent's job)",
        ),
        (said("How can I help you today?"), "answered as the agent (offered help like an agent)"),
    ],
)
def test_llm_user_malformed_completion_is_flagged_not_raised(completion: Completion, violation: str) -> None:
    conv = Conversation(LLMUser(FakeBackend([completion])), _task("toy", "toy-order-status"))
    turn = conv.open()
    assert not turn.validity.valid
    assert violation in turn.validity.violations


def test_backend_error_is_a_user_sim_error_and_leaves_the_conversation_unchanged() -> None:
    backend = FakeBackend([said("Hi."), BackendError("HTTP 503 after 4 retries"), said("Sure.")])
    conv = Conversation(LLMUser(backend), _task("toy", "toy-order-status"))
    conv.open()
    with pytest.raises(UserSimError, match="backend fake failed: HTTP 503") as info:
        conv.agent_message("What is the order id?")
    assert not isinstance(info.value, ConversationError)
    assert isinstance(info.value.__cause__, BackendError)
    assert conv.turn_count == 1 and len(conv.history) == 1
    assert conv.agent_message("What is the order id?").content == "Sure."  # the same call, retried


def test_system_prompt_carries_the_scenario_rules_and_user_tools() -> None:
    task = _task("telecom", "telecom-no_service-1")
    prompt = system_prompt(task, load_domain("telecom"))
    user = task.user
    for part in (user.instruction, user.known_info, user.unknown_info, user.persona, STOP_TOKEN, TRANSFER_TOKEN):
        assert part in prompt
    assert OUT_OF_SCOPE_TOKEN in prompt and "toggle_airplane_mode" in prompt
    retail = system_prompt(_task("retail", "retail-cancel_pending_order-1"), load_domain("retail"))
    assert "Your tools" not in retail


def test_compact_system_prompt_is_the_scenario_only() -> None:
    task = _task("telecom", "telecom-no_service-1")
    full, compact = (system_prompt(task, load_domain("telecom"), style) for style in ("full", "compact"))
    for part in (task.user.instruction, task.user.known_info, task.user.unknown_info):
        assert part in compact
    assert STOP_TOKEN not in compact and "Rules" not in compact
    assert len(compact) < len(full) / 3


# ---------------------------------------------------------------------------------------------------------------
# LatencyUser and the factory
# ---------------------------------------------------------------------------------------------------------------


def test_latency_user_adds_its_delay_and_nothing_else() -> None:
    task = _task("airline", "airline-cancel_reservation-1")
    start = time.perf_counter()
    slow = replay(task, LatencyUser(ProceduralUser(), 0.05))
    elapsed = time.perf_counter() - start
    assert elapsed >= 0.05 * len(slow.turns)
    assert _serialized(slow) == _serialized(replay(task))
    assert LatencyUser(ProceduralUser(), 0.05).name == "procedural"
    with pytest.raises(ValueError, match="seconds >= 0"):
        LatencyUser(ProceduralUser(), -1)


def test_make_policy() -> None:
    assert isinstance(make_policy("procedural"), ProceduralUser)
    assert make_policy("procedural").name == "procedural"
    llm = make_policy("llm", backend=FakeBackend([]))
    assert isinstance(llm, LLMUser) and llm.name == "llm:fake"
    wrapped = make_policy("procedural", latency_s=0.01)
    assert isinstance(wrapped, LatencyUser) and isinstance(wrapped.inner, ProceduralUser)
    assert isinstance(wrapped, UserPolicy)
    with pytest.raises(ValueError, match="needs a ChatBackend"):
        make_policy("llm")
    with pytest.raises(ValueError, match="unknown user policy 'oracle'; kinds: procedural, llm"):
        make_policy("oracle")
