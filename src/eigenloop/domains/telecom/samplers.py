"""Scenario samplers for telecom troubleshooting: which customer's phone or line is broken, how, and how it is fixed.

Each sampler picks a suitable customer and line from the state and composes tau2-style "breaks" (airplane
mode on, SIM unseated, APN broken, line suspended for an overdue bill, ...). The Scenario's entities carry,
as JSON text, everything a task needs:

  setup_actions  the initial-state actions that apply the breaks ({"side", "name", "arguments"}; setup
                 functions or tools), starting with set_user_info for the chosen line
  fix_actions    the actions that resolve it under the policy (or the transfer, when it is not resolvable)
  assertions     env assertions ({"function", "arguments", "expected"}) that hold once resolved

`allowed` is False for the goals the policy does not let the agent resolve (locked SIM, suspension after
the contract ended): the right outcome there is a transfer to a human agent.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import DomainState, Scenario, ScenarioSampler, Side
from eigenloop.domains.telecom.db import TODAY, Line, Plan, TelecomDB
from eigenloop.protocol import tool_call

Action = dict[str, Any]
REFUEL_GB = 2.0


@dataclass(frozen=True)
class Target:
    customer_id: str
    full_name: str
    line: Line
    plan: Plan
    new_bill_id: str
    excess_gb: float  # how far over the allowance a data_usage_exceeded break puts the line (below REFUEL_GB)


def _user(name: str, /, **arguments: Any) -> Action:
    return {"side": "user", "name": name, "arguments": arguments}


def _agent(name: str, /, **arguments: Any) -> Action:
    return {"side": "agent", "name": name, "arguments": arguments}


@dataclass(frozen=True)
class Break:
    """One thing wrong, how it is set up, how it is fixed (in fix order), and whether the agent may fix it."""

    name: str
    setup: Callable[[Target], list[Action]]
    fix: Callable[[Target], list[Action]]
    order: int
    fixable: bool = True
    group: str = ""  # at most one break per group in a scenario


def _ids(t: Target) -> dict[str, Any]:
    return {"customer_id": t.customer_id, "line_id": t.line.line_id}


def _over_limit(t: Target) -> float:
    return round(t.plan.data_limit_gb + t.line.data_refueling_gb + t.excess_gb, 2)


def _transfer(t: Target) -> list[Action]:
    return [_agent("transfer_to_human_agents", summary="The issue cannot be resolved by support; transferring.")]


def _overdue(t: Target, contract_ended: bool) -> list[Action]:
    return [
        _agent("suspend_line_for_overdue_bill", **_ids(t), new_bill_id=t.new_bill_id, contract_ended=contract_ended)
    ]


_BREAKS = [
    Break("airplane_mode_on", lambda t: [_user("turn_airplane_mode_on")], lambda t: [_user("toggle_airplane_mode")], 0),
    Break(
        "break_apn_settings",
        lambda t: [_user("break_apn_settings")],
        lambda t: [_user("reset_apn_settings"), _user("reboot_device")],
        1,
    ),
    Break(
        "overdue_bill_suspension",
        lambda t: _overdue(t, False),
        lambda t: [
            _agent("send_payment_request", customer_id=t.customer_id, bill_id=t.new_bill_id),
            _user("make_payment"),
            _agent("resume_line", **_ids(t)),
            _user("reboot_device"),
        ],
        2,
        group="suspension",
    ),
    Break("contract_end_suspension", lambda t: _overdue(t, True), _transfer, 99, fixable=False, group="suspension"),
    Break("unseat_sim_card", lambda t: [_user("unseat_sim_card")], lambda t: [_user("reseat_sim_card")], 3),
    Break(
        "lock_sim_card_pin", lambda t: [_user("lock_sim_card", mode="pin")], _transfer, 99, fixable=False, group="lock"
    ),
    Break(
        "lock_sim_card_puk", lambda t: [_user("lock_sim_card", mode="puk")], _transfer, 99, fixable=False, group="lock"
    ),
    Break(
        "bad_network_preference",
        lambda t: [_user("set_network_mode_preference", mode="2g_only")],
        lambda t: [_user("set_network_mode_preference", mode="4g_5g_preferred")],
        4,
        group="mode",
    ),
    Break(
        "bad_network_preference_3g",
        lambda t: [_user("set_network_mode_preference", mode="3g_only")],
        lambda t: [_user("set_network_mode_preference", mode="4g_5g_preferred")],
        4,
        group="mode",
    ),
    Break("data_mode_off", lambda t: [_user("turn_data_off")], lambda t: [_user("toggle_data")], 5),
    Break(
        "user_abroad_roaming_enabled_off",
        lambda t: [
            _user("set_user_location", abroad=True),
            _user("turn_roaming_off"),
            _agent("enable_roaming", **_ids(t)),
        ],
        lambda t: [_user("toggle_roaming")],
        6,
        group="roaming",
    ),
    Break(
        "user_abroad_roaming_disabled_on",
        lambda t: [
            _user("set_user_location", abroad=True),
            _user("turn_roaming_on"),
            _agent("disable_roaming", **_ids(t)),
        ],
        lambda t: [_agent("enable_roaming", **_ids(t))],
        6,
        group="roaming",
    ),
    Break(
        "user_abroad_roaming_disabled_off",
        lambda t: [
            _user("set_user_location", abroad=True),
            _user("turn_roaming_off"),
            _agent("disable_roaming", **_ids(t)),
        ],
        lambda t: [_agent("enable_roaming", **_ids(t)), _user("toggle_roaming")],
        6,
        group="roaming",
    ),
    Break(
        "data_saver_mode_on",
        lambda t: [_user("turn_data_saver_mode_on")],
        lambda t: [_user("toggle_data_saver_mode")],
        7,
    ),
    Break("bad_vpn", lambda t: [_user("break_vpn")], lambda t: [_user("disconnect_vpn")], 8),
    Break(
        "data_usage_exceeded",
        lambda t: [_agent("set_data_usage", **_ids(t), data_used_gb=_over_limit(t))],
        lambda t: [_agent("refuel_data", **_ids(t), gb_amount=REFUEL_GB)],
        9,
    ),
    Break(
        "bad_wifi_calling",
        lambda t: [_user("set_wifi_calling", enabled=True, mms_over_wifi=True)],
        lambda t: [_user("toggle_wifi_calling")],
        10,
    ),
    Break(
        "break_apn_mms_setting",
        lambda t: [_user("break_apn_mms_setting")],
        lambda t: [_user("reset_apn_settings"), _user("reboot_device")],
        11,
    ),
    Break(
        "break_app_storage_permission",
        lambda t: [_user("remove_app_permission", app_name="messaging", permission="storage")],
        lambda t: [_user("grant_app_permission", app_name="messaging", permission="storage")],
        12,
        group="app",
    ),
    Break(
        "break_app_sms_permission",
        lambda t: [_user("remove_app_permission", app_name="messaging", permission="sms")],
        lambda t: [_user("grant_app_permission", app_name="messaging", permission="sms")],
        12,
        group="app",
    ),
    Break(
        "break_app_both_permissions",
        lambda t: [
            _user("remove_app_permission", app_name="messaging", permission="sms"),
            _user("remove_app_permission", app_name="messaging", permission="storage"),
        ],
        lambda t: [
            _user("grant_app_permission", app_name="messaging", permission="sms"),
            _user("grant_app_permission", app_name="messaging", permission="storage"),
        ],
        12,
        group="app",
    ),
]
BREAKS = {b.name: b for b in _BREAKS}


def _service(status: str) -> Callable[[Target], list[dict[str, Any]]]:
    return lambda t: [{"function": "assert_service_status", "arguments": {"expected_status": status}, "expected": True}]


def _fast_data(t: Target) -> list[dict[str, Any]]:
    return [
        {"function": "assert_mobile_data_status", "arguments": {"expected_status": True}, "expected": True},
        {
            "function": "assert_internet_speed",
            "arguments": {"expected_speed": 200, "expected_desc": "excellent"},
            "expected": True,
        },
    ]


@dataclass(frozen=True)
class Goal:
    name: str
    required: list[str]  # one of these is always applied
    extras: list[str]  # up to `max_extras` of these join it
    assertions: Callable[[Target], list[dict[str, Any]]]
    policy_rule: str
    max_extras: int = 2
    low_data_plan: bool = False
    extra_fields: Callable[[Target], dict[str, str]] = field(default=lambda t: {})


GOALS = [
    Goal(
        "no_service",
        ["airplane_mode_on", "unseat_sim_card", "break_apn_settings"],
        ["airplane_mode_on", "unseat_sim_card", "break_apn_settings"],
        _service("connected"),
        "No service: have the user turn airplane mode off, reseat the SIM, then reset the APN settings and reboot.",
    ),
    Goal(
        "mobile_data",
        [
            "airplane_mode_on",
            "data_mode_off",
            "bad_network_preference",
            "bad_network_preference_3g",
            "data_saver_mode_on",
            "bad_vpn",
        ],
        ["airplane_mode_on", "data_mode_off", "bad_network_preference", "data_saver_mode_on", "bad_vpn"],
        _fast_data,
        "Mobile data missing or slow: restore service, then mobile data, the 4G/5G network mode, Data Saver off and a "
        "slow VPN disconnected, until the speed test is excellent.",
    ),
    Goal(
        "mms",
        [
            "bad_wifi_calling",
            "break_apn_mms_setting",
            "break_app_storage_permission",
            "break_app_sms_permission",
            "break_app_both_permissions",
        ],
        [
            "airplane_mode_on",
            "data_mode_off",
            "bad_network_preference",
            "unseat_sim_card",
            "bad_wifi_calling",
            "break_apn_mms_setting",
            "break_app_storage_permission",
        ],
        lambda t: [{"function": "assert_can_send_mms", "arguments": {"expected_status": True}, "expected": True}],
        "MMS: needs service and mobile data, a network above 2G, Wi-Fi Calling off, an MMSC URL (reset APN + reboot) "
        "and the messaging app's sms and storage permissions.",
    ),
    Goal(
        "roaming_abroad",
        ["user_abroad_roaming_enabled_off", "user_abroad_roaming_disabled_on", "user_abroad_roaming_disabled_off"],
        ["airplane_mode_on", "data_mode_off"],
        _fast_data,
        "Abroad: the phone's data roaming must be on and the line must be roaming-enabled; enable line roaming at no "
        "cost.",
        max_extras=1,
    ),
    Goal(
        "overdue_bill_suspension",
        ["overdue_bill_suspension"],
        ["airplane_mode_on", "unseat_sim_card"],
        lambda t: [
            *_service("connected")(t),
            {"function": "assert_no_overdue_bill", "arguments": {"overdue_bill_id": t.new_bill_id}, "expected": True},
        ],
        "Line suspended for an overdue bill: confirm it is overdue, send a payment request, confirm it is paid, "
        "resume the line and have the user reboot.",
        max_extras=1,
        extra_fields=lambda t: {"bill_id": t.new_bill_id},
    ),
    Goal(
        "data_refuel",
        ["data_usage_exceeded"],
        ["data_mode_off", "data_saver_mode_on"],
        lambda t: [
            {
                "function": "assert_data_refueling_amount",
                "arguments": {**_ids(t), "expected_amount": t.line.data_refueling_gb + REFUEL_GB},
                "expected": True,
            },
            {"function": "assert_mobile_data_status", "arguments": {"expected_status": True}, "expected": True},
        ],
        f"Data allowance used up: refuel at most {REFUEL_GB:g} GB at the plan's price per GB, after the user agrees "
        "to the price.",
        max_extras=1,
        low_data_plan=True,
    ),
    Goal(
        "locked_sim_transfer",
        ["lock_sim_card_pin", "lock_sim_card_puk"],
        ["airplane_mode_on", "unseat_sim_card", "break_apn_settings"],
        _service("no_service"),
        "A SIM locked by PIN or PUK cannot be unlocked by support: transfer to a human agent.",
    ),
    Goal(
        "contract_end_suspension",
        ["contract_end_suspension"],
        ["airplane_mode_on", "unseat_sim_card"],
        _service("no_service"),
        "A line suspended after its contract ended may not be resumed, even once paid: transfer to a human agent.",
        max_extras=1,
        extra_fields=lambda t: {"bill_id": t.new_bill_id},
    ),
]


def _candidates(db: TelecomDB, low_data_plan: bool) -> list[tuple[str, str, Line, Plan]]:
    """(customer id, name, line, plan) for lines that start out healthy: an active phone line of an active
    customer in good standing (nothing overdue or awaiting payment), contract running, data left."""
    plans = {p.plan_id: p for p in db.plans}
    lines = {line.line_id: line for line in db.lines}
    devices = {d.device_id: d for d in db.devices}
    bills = {b.bill_id: b for b in db.bills}
    found = []
    for customer in db.customers:
        if customer.account_status != "Active":
            continue
        if any(bills[b].status in ("Overdue", "Awaiting Payment") for b in customer.bill_ids if b in bills):
            continue
        for line_id in customer.line_ids:
            line = lines.get(line_id)
            if line is None or line.status != "Active" or line.plan_id not in plans:
                continue
            device = devices.get(line.device_id or "")
            if device is None or device.device_type != "phone":
                continue
            plan = plans[line.plan_id]
            if line.contract_end_date is not None and line.contract_end_date <= TODAY:
                continue
            if line.data_used_gb >= plan.data_limit_gb + line.data_refueling_gb:
                continue
            if low_data_plan and plan.data_limit_gb >= 100:
                continue
            found.append((customer.customer_id, customer.full_name, line, plan))
    return found


def _new_bill_id(db: TelecomDB, rng: random.Random) -> str:
    existing = {b.bill_id for b in db.bills}
    while True:
        bill_id = f"B{rng.randrange(16**8):08X}"
        if bill_id not in existing:
            return bill_id


def _sampler(goal: Goal) -> ScenarioSampler:
    def sample(state: DomainState, rng: random.Random) -> Scenario | None:
        db = state.db
        if not isinstance(db, TelecomDB):
            return None
        candidates = _candidates(db, goal.low_data_plan)
        if not candidates:
            return None
        customer_id, full_name, line, plan = rng.choice(candidates)
        excess = rng.choice([0.1, 0.3, 0.5, 0.8, 1.2])
        target = Target(customer_id, full_name, line, plan, _new_bill_id(db, rng), excess)
        chosen = [BREAKS[rng.choice(goal.required)]]
        extras = [BREAKS[n] for n in goal.extras]
        rng.shuffle(extras)
        for extra in extras[: rng.randint(0, goal.max_extras)]:
            if all(extra.name != b.name and (not extra.group or extra.group != b.group) for b in chosen):
                chosen.append(extra)
        breaks = sorted(chosen, key=lambda b: b.name)
        setup = [_user("set_user_info", name=full_name, phone_number=line.phone_number)]
        for b in breaks:
            setup += b.setup(target)
        setup.append(_user("simulate_network_search"))
        allowed = all(b.fixable for b in breaks)
        fix: list[Action] = []
        for b in sorted(breaks, key=lambda b: (b.order, b.name)):
            if b.fixable:
                fix += b.fix(target)
        if not allowed:
            fix += _transfer(target)
        names = "|".join(b.name for b in breaks)
        return Scenario(
            goal=goal.name,
            entities={
                "customer_id": customer_id,
                "full_name": full_name,
                "line_id": line.line_id,
                "phone_number": line.phone_number,
                "breaks": names,
                "setup_actions": json.dumps(setup),
                "fix_actions": json.dumps(fix),
                "assertions": json.dumps(goal.assertions(target)),
                **goal.extra_fields(target),
            },
            allowed=allowed,
            policy_rule=goal.policy_rule,
            notes=(
                f"breaks {names} on line {line.line_id} ({line.phone_number}) of {customer_id}; "
                + (
                    "fixable by the user's device actions and the agent's tools"
                    if allowed
                    else "not fixable under the policy: the agent should transfer to a human agent"
                )
            ),
        )

    return sample


SAMPLERS: dict[str, ScenarioSampler] = {goal.name: _sampler(goal) for goal in GOALS}


def action_calls(actions_json: str) -> list[pb.ToolCall]:
    """The ToolCalls for a scenario's `setup_actions` or `fix_actions` entity."""
    return [
        tool_call(a["name"], a["arguments"], side=Side.USER if a["side"] == "user" else Side.AGENT)
        for a in json.loads(actions_json)
    ]


def state_assertions(assertions_json: str) -> list[pb.StateAssertion]:
    """The checker assertions for a scenario's `assertions` entity."""
    return [
        pb.StateAssertion(
            function=a["function"], arguments_json=json.dumps(a["arguments"]), expected_json=json.dumps(a["expected"])
        )
        for a in json.loads(assertions_json)
    ]
