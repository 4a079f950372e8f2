"""Built-in telecom tasks: for every scenario goal, a few sampled breaks turned into complete dual-control tasks.

Each task starts from the seeded company, applies the scenario's breaks as initial-state actions (setup
functions and tools, each on its side), and carries a reference dialogue that was produced by running it:
the user reports the symptom, the agent looks the customer up and instructs, the user acts on their phone
(user messages with user-side tool calls), and the agent closes. The dialogue's tool calls are the gold
calls; their writes are exactly the scenario's fix actions. Checkers follow tau2's telecom tasks: the
reward is the env assertions, times a name-only `transfer_to_human_agents` action for the goals that the
policy does not let the agent resolve.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import DomainState, Scenario, Side
from eigenloop.domains.telecom import DOMAIN
from eigenloop.domains.telecom.db import Line, Plan, TelecomDB
from eigenloop.domains.telecom.samplers import BREAKS, SAMPLERS, Target, state_assertions
from eigenloop.env.session import EnvSession
from eigenloop.protocol import tool_call

TASKS_PER_GOAL = 3
MAX_DRAWS = 40  # draws per goal while looking for distinct break combinations
TRANSFER_LINE = "YOU ARE BEING TRANSFERRED TO A HUMAN AGENT. PLEASE HOLD ON."
# Assertions over the company's records; every other assertion reads the user's phone.
AGENT_SIDE_ASSERTIONS = {
    "assert_data_refueling_amount",
    "assert_line_status",
    "assert_overdue_bill_exists",
    "assert_no_overdue_bill",
}

Action = dict[str, Any]

PERSONAS = [
    "",
    "You are a 41-year-old office administrator who uses your phone daily for work. You are friendly and patient, "
    "comfortable with everyday phone features, and you like clear step-by-step instructions.",
    "You are a 68-year-old retiree who is not confident with technology. You get a little anxious when the phone "
    "misbehaves, ask for each step to be explained simply, and confirm what you see after every step.",
    "You are a busy 33-year-old sales rep who is short on time and a bit impatient. You answer tersely and want "
    "the problem fixed quickly, but you do what the agent asks.",
]

GROUNDING = (
    "Whenever the agent asks about your phone, ground your answer in the result of a tool call on your phone "
    "(check the status bar, run a speed test, try sending an MMS, ...); never make results up. Do the actions "
    "the agent asks for one at a time. If an action doesn't fix the issue right away, follow the agent's next "
    "steps but show mild frustration after the first unsuccessful attempt. If you are unsure whether an action "
    "is necessary, ask the agent."
)


@dataclass(frozen=True)
class _GoalText:
    reason: str
    opening: str  # the user's first message, before their phone number
    check: str  # the user-side read that shows the symptom, at the start and (when fixable) at the end
    check_phrase: str
    resolved: str
    closing: str
    unknown: str
    extra: str = ""


_NO_SERVICE = "Your phone has been showing 'No Service' for the past few hours."
GOAL_TEXT: dict[str, _GoalText] = {
    "no_service": _GoalText(
        _NO_SERVICE,
        "Hi, my phone has had no service for a few hours now and I can't make calls or use data.",
        "check_status_bar",
        "check the status bar at the top of your screen",
        "You consider the issue resolved when the status bar shows that you have signal.",
        "Your phone is connected to the network again.",
        "You don't know your customer id or line id, or why the phone has no service.",
    ),
    "mobile_data": _GoalText(
        "Your mobile data is not working properly: it either stops working or is very slow. You have no Wi-Fi.",
        "Hello, my mobile data is either not working at all or unbearably slow.",
        "run_speed_test",
        "run a speed test",
        "You consider the issue resolved only when the speed test shows Excellent speed; Poor, Fair or Good is "
        "not enough.",
        "Your mobile data is back at excellent speed.",
        "You don't know your customer id or line id, or which phone setting is causing the problem.",
        "You do not want to change your mobile data plan.",
    ),
    "mms": _GoalText(
        "You cannot send picture messages (MMS); regular texts are fine.",
        "Hi, I can't send picture messages from my phone. Regular texts go through, but MMS always fails.",
        "can_send_mms",
        "try sending a picture message",
        "You consider the issue resolved when your messaging app can send MMS messages.",
        "Your phone can send picture messages again.",
        "You don't know your customer id or line id, or which setting stops MMS from working.",
    ),
    "roaming_abroad": _GoalText(
        "You are travelling abroad and mobile data does not work there. You have no Wi-Fi.",
        "Hello, I'm abroad in France right now and my mobile data isn't working.",
        "run_speed_test",
        "run a speed test",
        "You consider the issue resolved only when the speed test shows Excellent speed.",
        "Your mobile data works abroad now, at excellent speed. Enjoy your trip!",
        "You don't know your customer id or line id, or whether roaming is enabled on your line.",
        "You are currently abroad in France.",
    ),
    "overdue_bill_suspension": _GoalText(
        _NO_SERVICE,
        "Hi, my phone says 'No Service' and has for a few hours. Calls and data don't work at all.",
        "check_status_bar",
        "check the status bar at the top of your screen",
        "You consider the issue resolved when the status bar shows that you have signal. If the agent asks you to "
        "pay a bill, you accept and pay it from your phone.",
        "Your line is active again and your phone has service.",
        "You don't know your customer id or line id, and you don't know that a bill of yours is overdue.",
    ),
    "data_refuel": _GoalText(
        "Your mobile data stopped working a while ago. You have no Wi-Fi.",
        "Hi, my mobile data stopped working earlier today and I really need it.",
        "run_speed_test",
        "run a speed test",
        "You consider the issue resolved when mobile data works again (the speed test gives a result).",
        "Your mobile data is working again.",
        "You don't know your customer id or line id, or how much of your data allowance you have used.",
        "You are willing to refuel 2 GB of data if necessary, but you do not want to change your plan.",
    ),
    "locked_sim_transfer": _GoalText(
        _NO_SERVICE,
        "Hi, my phone has shown 'No Service' for hours and I can't call anyone.",
        "check_status_bar",
        "check the status bar at the top of your screen",
        "You consider the issue resolved when the status bar shows that you have signal, or when the agent "
        "transfers you to someone who can fix it.",
        "",
        "You don't know your customer id or line id, or your SIM card's PIN or PUK code.",
    ),
    "contract_end_suspension": _GoalText(
        _NO_SERVICE,
        "Hello, my phone has had no service since this morning. Nothing works.",
        "check_status_bar",
        "check the status bar at the top of your screen",
        "You consider the issue resolved when the status bar shows that you have signal, or when the agent "
        "transfers you to someone who can fix it. If the agent asks you to pay a bill, you accept.",
        "",
        "You don't know your customer id or line id, or that your line's contract has ended.",
    ),
}


@dataclass
class _Context:
    customer_id: str
    line_id: str
    first_name: str
    phone: str
    bill_id: str


@dataclass
class _Dialogue:
    """Runs the conversation's tool calls in a session started from the task's initial state, recording them."""

    session: EnvSession
    messages: list[pb.Message] = field(default_factory=list)
    calls: list[pb.ToolCall] = field(default_factory=list)
    fixes: list[Action] = field(default_factory=list)
    last: str = ""
    last_tool: str = ""

    @property
    def db(self) -> TelecomDB:
        db = self.session.state.db
        assert isinstance(db, TelecomDB)
        return db

    def user(self, text: str) -> None:
        self.messages.append(pb.Message(role=pb.ROLE_USER, content=text))

    def agent(self, text: str) -> None:
        """An assistant text message; it continues the assistant's previous text when nothing came between."""
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == pb.ROLE_ASSISTANT and not last.tool_calls:
            last.content = f"{last.content} {text}"
            return
        if last is not None and last.role == pb.ROLE_USER and last.content and not text.startswith("Thank"):
            text = f"Thanks. {text}"
        self.messages.append(pb.Message(role=pb.ROLE_ASSISTANT, content=text))

    def call(self, side: Side, name: str, arguments: dict[str, Any] | None = None) -> str:
        call = tool_call(name, arguments, side=side, call_id=f"call_{len(self.calls) + 1}")
        result = self.session.call(call)
        if result.error or result.content.startswith("Error"):
            raise RuntimeError(f"telecom task dialogue: {name}({call.arguments_json}) failed: {result.content}")
        role = pb.ROLE_USER if side is Side.USER else pb.ROLE_ASSISTANT
        self.messages.append(pb.Message(role=role, tool_calls=[call]))
        self.messages.append(pb.Message(role=pb.ROLE_TOOL, content=result.content, tool_result=result))
        self.calls.append(tool_call(name, arguments, side=side))
        self.last, self.last_tool = result.content, name
        return result.content

    def fix(self, action: Action) -> str:
        self.fixes.append(action)
        return self.call(Side(action["side"]), action["name"], action["arguments"])

    def probe(self, ask: str, name: str, arguments: dict[str, Any] | None = None) -> None:
        """The agent asks for a check on the phone; the user runs it and reads the result back."""
        self.agent(ask)
        self.call(Side.USER, name, arguments)
        self.user(f"It says: {_flat(self.last)}")


def _flat(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _after(text: str) -> str:
    """What the user reports after a device action: the phone's message and the status bar it shows."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "Done. " + " ".join(lines)


Step = Callable[[_Dialogue, _Context, list[Action]], None]


def _device_fix(probe: str, ask: str, instruct: str, arguments: dict[str, Any] | None = None) -> Step:
    """A break the user fixes on their phone: the agent has them check, then tells them what to do."""

    def step(d: _Dialogue, ctx: _Context, fixes: list[Action]) -> None:
        if probe != d.last_tool:  # unless they have just looked at exactly this
            d.probe(ask, probe, arguments)
        d.agent(instruct)
        for action in fixes:
            d.fix(action)
        d.user(_after(d.last))

    return step


_ASK_APN = "Could you open your APN settings and tell me what they show?"
_ASK_MODE = "Could you check which network mode your phone is set to prefer?"
_ASK_PERMISSIONS = "Could you check which permissions the messaging app has?"
_MESSAGING = {"app_name": "messaging"}
_REBOOT = (
    "Please reset your APN settings to the defaults and then restart your phone; the reset only takes effect "
    "after a reboot."
)

STEPS: dict[str, Step] = {
    "airplane_mode_on": _device_fix(
        "check_status_bar",
        "Could you check the status bar at the top of your screen and tell me what it shows?",
        "Airplane Mode is on, which switches off the phone's cellular radio. Please turn Airplane Mode off.",
    ),
    "break_apn_settings": _device_fix(
        "check_apn_settings", _ASK_APN, "The APN name isn't the carrier's, so the phone can't register. " + _REBOOT
    ),
    "unseat_sim_card": _device_fix(
        "check_sim_status",
        "Could you check your SIM card status?",
        "The phone isn't detecting your SIM card. Please take the SIM card out and put it back in firmly.",
    ),
    "bad_network_preference": _device_fix(
        "check_network_mode_preference",
        _ASK_MODE,
        "Your phone only uses 2G, which is very slow and can't carry picture messages. Please set the network mode "
        "to 4g_5g_preferred.",
    ),
    "bad_network_preference_3g": _device_fix(
        "check_network_mode_preference",
        _ASK_MODE,
        "Your phone only uses 3G, which is slow. Please set the network mode to 4g_5g_preferred.",
    ),
    "data_mode_off": _device_fix(
        "check_network_status",
        "Could you check your network status and tell me whether mobile data is enabled?",
        "Mobile data is switched off on your phone. Please turn mobile data on.",
    ),
    "data_saver_mode_on": _device_fix(
        "check_data_restriction_status",
        "Could you check whether Data Saver mode is on?",
        "Data Saver is on, and it throttles your data. Please turn Data Saver mode off.",
    ),
    "bad_vpn": _device_fix(
        "check_vpn_status",
        "Could you check whether a VPN is connected on your phone?",
        "You're connected to a VPN server with poor performance, which slows everything down. Please disconnect "
        "the VPN.",
    ),
    "bad_wifi_calling": _device_fix(
        "check_wifi_calling_status",
        "Could you check whether Wi-Fi Calling is on?",
        "Wi-Fi Calling is on and set to send picture messages over Wi-Fi, which stops MMS from going out. Please "
        "turn Wi-Fi Calling off.",
    ),
    "break_apn_mms_setting": _device_fix(
        "check_apn_settings", _ASK_APN, "The MMSC URL that picture messages need is missing. " + _REBOOT
    ),
    "break_app_storage_permission": _device_fix(
        "check_app_permissions",
        _ASK_PERMISSIONS,
        "The messaging app is missing the storage permission, which it needs for picture messages. Please grant "
        "the messaging app the storage permission.",
        _MESSAGING,
    ),
    "break_app_sms_permission": _device_fix(
        "check_app_permissions",
        _ASK_PERMISSIONS,
        "The messaging app is missing the sms permission. Please grant the messaging app the sms permission.",
        _MESSAGING,
    ),
    "break_app_both_permissions": _device_fix(
        "check_app_permissions",
        _ASK_PERMISSIONS,
        "The messaging app is missing both the sms and the storage permissions, and picture messages need both. "
        "Please grant the messaging app the sms permission and then the storage permission.",
        _MESSAGING,
    ),
}


def _named(fixes: list[Action], *names: str) -> list[Action]:
    if [a["name"] for a in fixes] != list(names):
        raise RuntimeError(f"telecom tasks: expected fix actions {names}, the sampler gave {fixes}")
    return fixes


def _enable_line_roaming(d: _Dialogue, ctx: _Context, action: Action) -> None:
    d.agent(
        f"Since you're abroad, your line needs international roaming, and it isn't enabled on line {ctx.line_id}. "
        "I can enable it for you at no cost. Shall I go ahead?"
    )
    d.user("Yes, please enable it.")
    d.fix(action)


def _phone_roaming(d: _Dialogue, lead: str, action: Action) -> None:
    d.probe(
        lead + "Could you check your network status and tell me whether data roaming is on?", "check_network_status"
    )
    d.agent("Data roaming is off on your phone, and abroad mobile data needs it. Please turn data roaming on.")
    d.fix(action)
    d.user(_after(d.last))


def _roaming_enabled_off(d: _Dialogue, ctx: _Context, fixes: list[Action]) -> None:
    (toggle,) = _named(fixes, "toggle_roaming")
    _phone_roaming(d, "Roaming is already enabled on your line, so let's look at the phone. ", toggle)


def _roaming_disabled_on(d: _Dialogue, ctx: _Context, fixes: list[Action]) -> None:
    (enable,) = _named(fixes, "enable_roaming")
    _enable_line_roaming(d, ctx, enable)
    d.agent(f"Done: roaming is now enabled on line {ctx.line_id}.")


def _roaming_disabled_off(d: _Dialogue, ctx: _Context, fixes: list[Action]) -> None:
    enable, toggle = _named(fixes, "enable_roaming", "toggle_roaming")
    _enable_line_roaming(d, ctx, enable)
    _phone_roaming(d, f"Done: roaming is now enabled on line {ctx.line_id}. ", toggle)


def _data_refuel(d: _Dialogue, ctx: _Context, fixes: list[Action]) -> None:
    (refuel,) = _named(fixes, "refuel_data")
    usage = json.loads(d.call(Side.AGENT, "get_data_usage", {"customer_id": ctx.customer_id, "line_id": ctx.line_id}))
    line = next(x for x in d.db.lines if x.line_id == ctx.line_id)
    price = next(p for p in d.db.plans if p.plan_id == line.plan_id).data_refueling_price_per_gb
    amount = float(refuel["arguments"]["gb_amount"])
    refueled = f" plus {usage['data_refueling_gb']:g} GB already refueled" if usage["data_refueling_gb"] else ""
    d.agent(
        f"I found it: you've used {usage['data_used_gb']:g} GB of your {usage['data_limit_gb']:g} GB allowance"
        f"{refueled}, so mobile data is paused until the cycle ends on {usage['cycle_end_date']}. I can add up to "
        f"{amount:g} GB at ${price:.2f} per GB; {amount:g} GB would cost ${amount * price:.2f}, charged on your next "
        "bill. Would you like me to add it?"
    )
    d.user(f"Yes, please add {amount:g} GB.")
    d.fix(refuel)
    d.agent(f"Done: {amount:g} GB of data has been added to line {ctx.line_id}.")


def _overdue_bill(d: _Dialogue, ctx: _Context, fixes: list[Action]) -> None:
    request, pay, resume, reboot = _named(fixes, "send_payment_request", "make_payment", "resume_line", "reboot_device")
    d.call(Side.AGENT, "get_bills_for_customer", {"customer_id": ctx.customer_id})
    bill = next(b for b in d.db.bills if b.bill_id == ctx.bill_id)
    d.agent(
        f"I see why: line {ctx.line_id} is suspended because bill {bill.bill_id} for ${bill.total_due:.2f} is "
        "overdue. Once it's paid I can resume the line. Shall I send you a payment request for it?"
    )
    d.user("Yes, please send it.")
    d.fix(request)
    d.agent("I've sent the payment request. Please check it on your phone and pay it.")
    d.call(Side.USER, "check_payment_request")
    d.fix(pay)
    d.user(f"I've paid it. {_flat(d.last).split(';')[0]}")
    d.call(Side.AGENT, "get_details_by_id", {"id": ctx.bill_id})
    d.fix(resume)
    d.agent(
        f"Thank you: bill {bill.bill_id} now shows as paid, and I've resumed your line. Please restart your phone "
        "so it reconnects to the network."
    )
    d.fix(reboot)
    d.user(_after(d.last))


STEPS |= {
    "user_abroad_roaming_enabled_off": _roaming_enabled_off,
    "user_abroad_roaming_disabled_on": _roaming_disabled_on,
    "user_abroad_roaming_disabled_off": _roaming_disabled_off,
    "data_usage_exceeded": _data_refuel,
    "overdue_bill_suspension": _overdue_bill,
}


def _transfer(d: _Dialogue, ctx: _Context, unfixable: str, transfer: Action) -> None:
    if unfixable == "contract_end_suspension":
        line = next(x for x in d.db.lines if x.line_id == ctx.line_id)
        d.call(Side.AGENT, "get_bills_for_customer", {"customer_id": ctx.customer_id})
        d.fix(transfer)
        d.agent(
            f"Your line {ctx.line_id} is suspended: bill {ctx.bill_id} is overdue, and the line's contract ended on "
            f"{line.contract_end_date}. I'm not allowed to resume a line whose contract has ended, even after "
            f"payment, so I've passed your case to a human agent who can help. {TRANSFER_LINE}"
        )
        return
    code = "PUK" if unfixable == "lock_sim_card_puk" else "PIN"
    again = " again" if any(c.name == "check_sim_status" for c in d.calls) else ""
    d.probe(f"Could you check your SIM card status{again}?", "check_sim_status")
    d.fix(transfer)
    d.agent(
        f"Your SIM card is locked with a {code} code, which I can't unlock from here, so I've passed your case to a "
        f"human agent who can help. {TRANSFER_LINE}"
    )


def _describe(function: str, arguments: dict[str, Any], expected: Any) -> str:
    negated = "" if expected is True else "not "
    match function:
        case "assert_service_status":
            return f"the phone's service status is {arguments['expected_status']!r}"
        case "assert_mobile_data_status":
            return f"mobile data {'works' if arguments['expected_status'] == expected else 'does not work'}"
        case "assert_internet_speed":
            return f"the speed test shows at least {arguments['expected_speed']} Mbps ({arguments['expected_desc']})"
        case "assert_can_send_mms":
            return f"the messaging app can {negated}send MMS"
        case "assert_no_overdue_bill":
            return f"bill {arguments['overdue_bill_id']} is paid"
        case "assert_data_refueling_amount":
            return f"line {arguments['line_id']} has {arguments['expected_amount']:g} GB refueled"
        case _:
            return f"{function}({json.dumps(arguments)}) is {json.dumps(expected)}"


def _assertions(entities: dict[str, str]) -> list[pb.StateAssertion]:
    found = state_assertions(entities["assertions"])
    for a, raw in zip(found, json.loads(entities["assertions"]), strict=True):
        a.side = pb.TOOL_SIDE_AGENT if a.function in AGENT_SIDE_ASSERTIONS else pb.TOOL_SIDE_USER
        a.description = _describe(raw["function"], raw["arguments"], raw["expected"])
    return found


def _target(db: TelecomDB, entities: dict[str, str]) -> Target:
    line: Line = next(x for x in db.lines if x.line_id == entities["line_id"])
    plan: Plan = next(p for p in db.plans if p.plan_id == line.plan_id)
    # excess_gb only shapes the setup of a data_usage_exceeded break, never its fix.
    return Target(entities["customer_id"], entities["full_name"], line, plan, entities.get("bill_id", ""), 0.0)


def _scenarios(goal: str, state: DomainState, seed: int) -> list[Scenario]:
    """Up to TASKS_PER_GOAL scenarios of `goal` with distinct break combinations, drawn deterministically."""
    found: dict[str, Scenario] = {}
    for draw in range(MAX_DRAWS):
        scenario = SAMPLERS[goal](state, random.Random(f"telecom-tasks:{seed}:{goal}:{draw}"))
        if scenario is not None and scenario.entities["breaks"] not in found:
            found[scenario.entities["breaks"]] = scenario
        if len(found) == TASKS_PER_GOAL:
            break
    return list(found.values())


def _task(scenario: Scenario, index: int, seed: int, base: TelecomDB) -> pb.Task:
    goal, entities = scenario.goal, scenario.entities
    text = GOAL_TEXT[goal]
    initial = pb.InitialState(
        actions=[
            tool_call(a["name"], a["arguments"], side=Side(a["side"])) for a in json.loads(entities["setup_actions"])
        ]
    )
    d = _Dialogue(EnvSession(DOMAIN, initial_state=initial, seed=seed))
    ctx = _Context(
        customer_id=entities["customer_id"],
        line_id=entities["line_id"],
        first_name=entities["full_name"].split()[0],
        phone=entities["phone_number"],
        bill_id=entities.get("bill_id", ""),
    )
    rng = random.Random(f"telecom-tasks:{seed}:{goal}:{index}:persona")

    d.user(f"{text.opening} My number is {ctx.phone}.")
    d.call(Side.AGENT, "get_customer_by_phone", {"phone_number": ctx.phone})
    d.call(Side.AGENT, "get_details_by_id", {"id": ctx.line_id})
    d.probe(
        f"Thanks, {ctx.first_name}. I've found your account and your line {ctx.line_id}. To see what's going on, could "
        f"you {text.check_phrase} and tell me what it shows?",
        text.check,
    )

    target = _target(base, entities)
    breaks = sorted((BREAKS[name] for name in entities["breaks"].split("|")), key=lambda b: (b.order, b.name))
    for b in breaks:
        if b.fixable:
            STEPS[b.name](d, ctx, b.fix(target))
    expected_fixes: list[Action] = json.loads(entities["fix_actions"])
    if scenario.allowed:
        d.probe(f"Could you {text.check_phrase} once more?", text.check)
        d.agent(f"Thanks for checking. {text.closing} Have a great day, {ctx.first_name}!")
        # Beyond tau2's ENV_ASSERTION: the final state must also be the gold one, so a fix that leaves the
        # phone otherwise altered (data switched off, Data Saver on) fails; mutation testing showed tau2's
        # basis alone lets those through.
        checker = pb.Checker(reward_basis=[pb.REWARD_COMPONENT_ASSERTION, pb.REWARD_COMPONENT_STATE])
    else:
        (unfixable,) = [b.name for b in breaks if not b.fixable]
        _transfer(d, ctx, unfixable, expected_fixes[-1])
        checker = pb.Checker(
            required_actions=[
                pb.ActionMatch(call=tool_call("transfer_to_human_agents"), match=pb.ARGUMENT_MATCH_NAME_ONLY)
            ],
            reward_basis=[pb.REWARD_COMPONENT_ASSERTION, pb.REWARD_COMPONENT_ACTION],
        )
        if unfixable == "contract_end_suspension":  # policy: never resume a line whose contract has ended
            checker.forbidden_actions.append(
                pb.ActionMatch(call=tool_call("resume_line"), match=pb.ARGUMENT_MATCH_NAME_ONLY)
            )
    if d.fixes != expected_fixes:
        raise RuntimeError(f"telecom tasks: the dialogue's fixes {d.fixes} are not the scenario's {expected_fixes}")
    checker.gold_actions.extend(d.calls)
    checker.assertions.extend(_assertions(entities))

    known = f"You are {entities['full_name']} with phone number {ctx.phone}."
    if text.extra.startswith("You are currently"):
        known += f" {text.extra}"
        extra = ""
    else:
        extra = f" {text.extra}" if text.extra else ""
    return pb.Task(
        id=f"telecom-{goal}-{index}",
        domain="telecom",
        description=f"{scenario.policy_rule} Scenario: {scenario.notes}.",
        user=pb.UserScenario(
            instruction=f"{text.reason} You want it fixed. {text.resolved}{extra} {GROUNDING}",
            persona=rng.choice(PERSONAS),
            known_info=known,
            unknown_info=text.unknown,
            reason_for_call=text.reason,
        ),
        initial_state=initial,
        reference_dialogue=d.messages,
        checker=checker,
        provenance=pb.Provenance(source="builtin", seed=seed, backend="procedural"),
    )


def sample_tasks(seed: int = 0) -> list[pb.Task]:
    """Two or three tasks for every telecom goal, from the domain's state for `seed` (run them with that seed)."""
    state = DOMAIN.initial_state(seed)
    assert isinstance(state.db, TelecomDB)
    tasks: list[pb.Task] = []
    for goal in SAMPLERS:
        for index, scenario in enumerate(_scenarios(goal, state, seed), start=1):
            tasks.append(_task(scenario, index, seed, state.db))
    return tasks
