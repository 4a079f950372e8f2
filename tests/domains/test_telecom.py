"""The telecom domain (dual control): agent and user tools, sync, side enforcement, refusals that change nothing,
the generator, the scenario samplers, and a replay of every tau2 train task's setup, gold fix and env assertions."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Domain, DomainState, Side, ToolKind
from eigenloop.domains.telecom import DOMAIN
from eigenloop.domains.telecom.db import (
    Address,
    Bill,
    Customer,
    Device,
    Line,
    LineItem,
    Plan,
    TelecomDB,
    TelecomUserDB,
    generate_state,
)
from eigenloop.domains.telecom.samplers import SAMPLERS, action_calls, state_assertions
from eigenloop.domains.telecom.tau2 import load_tau2_state
from eigenloop.env.session import EnvSession, execute
from eigenloop.protocol import tool_call

TAU2_DIR = Path(__file__).resolve().parents[3] / "shared" / "tau2" / "data" / "telecom"
TAU2_MISSING = f"tau2 telecom data not found at {TAU2_DIR}"

AGENT_TOOL_KINDS = {
    "get_customer_by_phone": ToolKind.READ,
    "get_customer_by_id": ToolKind.READ,
    "get_customer_by_name": ToolKind.READ,
    "get_details_by_id": ToolKind.READ,
    "get_bills_for_customer": ToolKind.READ,
    "get_data_usage": ToolKind.READ,
    "suspend_line": ToolKind.WRITE,
    "resume_line": ToolKind.WRITE,
    "send_payment_request": ToolKind.WRITE,
    "enable_roaming": ToolKind.WRITE,
    "disable_roaming": ToolKind.WRITE,
    "refuel_data": ToolKind.WRITE,
    "transfer_to_human_agents": ToolKind.GENERIC,
}
USER_READ = {
    "check_status_bar",
    "check_network_status",
    "check_network_mode_preference",
    "run_speed_test",
    "check_sim_status",
    "check_data_restriction_status",
    "check_apn_settings",
    "check_wifi_status",
    "check_wifi_calling_status",
    "check_vpn_status",
    "check_installed_apps",
    "check_app_status",
    "check_app_permissions",
    "can_send_mms",
    "check_payment_request",
}
USER_WRITE = {
    "toggle_airplane_mode",
    "set_network_mode_preference",
    "reseat_sim_card",
    "toggle_data",
    "toggle_roaming",
    "toggle_data_saver_mode",
    "set_apn_settings",
    "reset_apn_settings",
    "toggle_wifi",
    "toggle_wifi_calling",
    "connect_vpn",
    "disconnect_vpn",
    "grant_app_permission",
    "reboot_device",
    "make_payment",
}

# ------------------------------------------------------------------------------------------- a tiny carrier

ANA, BO = "C1", "C2"
ANA_LINE, ANA_LINE2, BO_LINE = "L1", "L2", "L3"
ANA_NUMBER, ANA_CONTACT, BO_NUMBER = "555-000-0001", "555-000-0099", "555-000-0003"
ISSUED, DRAFT, BO_BILL = "B1", "B2", "B3"


def _tiny_state() -> DomainState:
    plans = [
        Plan(plan_id="P1", name="Small", data_limit_gb=5.0, price_per_month=40.0, data_refueling_price_per_gb=5.0),
        Plan(plan_id="P2", name="Big", data_limit_gb=20.0, price_per_month=70.0, data_refueling_price_per_gb=2.0),
    ]
    address = Address(street="1 Main St", city="Springfield", state="IL", zip_code="62701")
    customers = [
        Customer(
            customer_id=ANA,
            full_name="Ana Lima",
            date_of_birth=date(1990, 5, 1),
            email="ana@example.com",
            phone_number=ANA_CONTACT,
            address=address,
            account_status="Active",
            line_ids=[ANA_LINE, ANA_LINE2],
            bill_ids=[ISSUED, DRAFT],
            created_at=datetime(2024, 1, 1, 10),
        ),
        Customer(
            customer_id=BO,
            full_name="Bo Berg",
            date_of_birth=date(1980, 1, 2),
            email="bo@example.com",
            phone_number="555-000-0098",
            address=address,
            account_status="Active",
            line_ids=[BO_LINE],
            bill_ids=[BO_BILL],
            created_at=datetime(2024, 2, 1, 10),
        ),
    ]
    lines = [
        Line(
            line_id=ANA_LINE,
            phone_number=ANA_NUMBER,
            status="Active",
            plan_id="P1",
            device_id="D1",
            data_used_gb=2.0,
            roaming_enabled=False,
            contract_end_date=date(2026, 1, 1),
        ),
        Line(
            line_id=ANA_LINE2,
            phone_number="555-000-0002",
            status="Suspended",
            plan_id="P2",
            device_id="D2",
            suspension_start_date=date(2025, 2, 1),
        ),
        Line(
            line_id=BO_LINE,
            phone_number=BO_NUMBER,
            status="Active",
            plan_id="P2",
            device_id="D3",
            data_used_gb=19.5,
            roaming_enabled=True,
        ),
    ]
    item = LineItem(
        description="Small - Line 555-000-0001", amount=40.0, date=date(2025, 2, 5), item_type="Plan Charge"
    )
    bills = [
        Bill(
            bill_id=ISSUED,
            customer_id=ANA,
            period_start=date(2025, 2, 1),
            period_end=date(2025, 2, 28),
            issue_date=date(2025, 2, 5),
            total_due=40.0,
            due_date=date(2025, 2, 19),
            line_items=[item],
            status="Issued",
        ),
        Bill(
            bill_id=DRAFT,
            customer_id=ANA,
            period_start=date(2025, 3, 1),
            period_end=date(2025, 3, 31),
            issue_date=date(2025, 3, 1),
            total_due=0.0,
            due_date=date(2025, 3, 15),
            status="Draft",
        ),
        Bill(
            bill_id=BO_BILL,
            customer_id=BO,
            period_start=date(2025, 1, 1),
            period_end=date(2025, 1, 31),
            issue_date=date(2025, 1, 5),
            total_due=70.0,
            due_date=date(2025, 1, 19),
            status="Overdue",
        ),
    ]
    devices = [
        Device(device_id=f"D{i}", device_type="phone", model="Pixel", is_esim_capable=True, activated=True)
        for i in (1, 2, 3)
    ]
    return DomainState(
        db=TelecomDB(plans=plans, customers=customers, lines=lines, bills=bills, devices=devices), user=TelecomUserDB()
    )


def _setup(state: DomainState, function: str, /, **arguments: Any) -> None:
    DOMAIN.setup_functions[function](state, **arguments)


@pytest.fixture()
def state() -> DomainState:
    """The tiny carrier with the phone belonging to Ana's line L1."""
    s = _tiny_state()
    _setup(s, "set_user_info", name="Ana Lima", phone_number=ANA_NUMBER)
    return s


def call(state: DomainState, name: str, arguments: dict[str, Any] | None = None, side: Side = Side.AGENT) -> Any:
    """Run a tool that must succeed; its content, JSON-decoded when it is JSON."""
    result, _ = execute(DOMAIN, state, tool_call(name, arguments or {}, side=side))
    assert not result.error, result.content
    try:
        return json.loads(result.content)
    except json.JSONDecodeError:
        return result.content


def user(state: DomainState, name: str, arguments: dict[str, Any] | None = None) -> Any:
    return call(state, name, arguments, Side.USER)


def refused(state: DomainState, name: str, arguments: dict[str, Any], side: Side = Side.AGENT) -> str:
    """Run a call that must fail, and check it changed nothing."""
    before = state.hash()
    result, _ = execute(DOMAIN, state, tool_call(name, arguments, side=side))
    assert result.error, f"{name}({arguments}) should fail, got {result.content}"
    assert state.hash() == before
    return result.content


def db(state: DomainState) -> TelecomDB:
    assert isinstance(state.db, TelecomDB)
    return state.db


def phone(state: DomainState) -> TelecomUserDB:
    assert isinstance(state.user, TelecomUserDB)
    return state.user


def line(state: DomainState, line_id: str) -> Line:
    return next(x for x in db(state).lines if x.line_id == line_id)


def bill(state: DomainState, bill_id: str) -> Bill:
    return next(b for b in db(state).bills if b.bill_id == bill_id)


def holds(state: DomainState, function: str, **arguments: Any) -> bool:
    return bool(DOMAIN.assertions[function](state, **arguments))


# ------------------------------------------------------------------------------------------------ surface


def test_tool_names_sides_and_kinds() -> None:
    assert {t.name: t.kind for t in DOMAIN.agent_tools} == AGENT_TOOL_KINDS
    assert {t.name for t in DOMAIN.user_tools} == USER_READ | USER_WRITE
    assert all(t.kind is (ToolKind.READ if t.name in USER_READ else ToolKind.WRITE) for t in DOMAIN.user_tools)
    assert not set(DOMAIN.setup_functions) & {t.name for t in DOMAIN.tools}
    for t in DOMAIN.tools:
        assert t.description and t.json_schema["type"] == "object", t.name
    assert "transfer" in DOMAIN.policy and "2 GB" in DOMAIN.policy


def test_agent_cannot_call_user_tools_and_user_cannot_call_agent_tools(state: DomainState) -> None:
    before = state.hash()
    result, _ = execute(DOMAIN, state, tool_call("toggle_airplane_mode"))
    assert result.error and result.error_kind == pb.TOOL_ERROR_KIND_WRONG_SIDE
    result, _ = execute(
        DOMAIN,
        state,
        tool_call("refuel_data", {"customer_id": ANA, "line_id": ANA_LINE, "gb_amount": 1.0}, side=Side.USER),
    )
    assert result.error and result.error_kind == pb.TOOL_ERROR_KIND_WRONG_SIDE
    assert state.hash() == before


# -------------------------------------------------------------------------------------------- agent tools


def test_customer_lookups(state: DomainState) -> None:
    assert call(state, "get_customer_by_phone", {"phone_number": ANA_CONTACT})["customer_id"] == ANA
    assert call(state, "get_customer_by_phone", {"phone_number": BO_NUMBER})["customer_id"] == BO  # a line's number
    assert "not found" in refused(state, "get_customer_by_phone", {"phone_number": "555-999-9999"})
    assert call(state, "get_customer_by_id", {"customer_id": BO})["full_name"] == "Bo Berg"
    assert "not found" in refused(state, "get_customer_by_id", {"customer_id": "C404"})
    found = call(state, "get_customer_by_name", {"full_name": "ana LIMA", "dob": "1990-05-01"})
    assert [c["customer_id"] for c in found] == [ANA]
    assert call(state, "get_customer_by_name", {"full_name": "Ana Lima", "dob": "1990-05-02"}) == []


def test_details_route_on_the_id_prefix(state: DomainState) -> None:
    assert call(state, "get_details_by_id", {"id": ANA_LINE})["phone_number"] == ANA_NUMBER
    assert call(state, "get_details_by_id", {"id": "D2"})["model"] == "Pixel"
    assert call(state, "get_details_by_id", {"id": BO_BILL})["status"] == "Overdue"
    assert call(state, "get_details_by_id", {"id": BO})["customer_id"] == BO
    assert call(state, "get_details_by_id", {"id": "P2"})["name"] == "Big"
    assert "Unknown ID" in refused(state, "get_details_by_id", {"id": "X1"})
    assert "not found" in refused(state, "get_details_by_id", {"id": "L999"})


def test_bills_newest_first_and_data_usage(state: DomainState) -> None:
    assert [b["bill_id"] for b in call(state, "get_bills_for_customer", {"customer_id": ANA})] == [DRAFT, ISSUED]
    assert [b["bill_id"] for b in call(state, "get_bills_for_customer", {"customer_id": ANA, "limit": 1})] == [DRAFT]
    usage = call(state, "get_data_usage", {"customer_id": ANA, "line_id": ANA_LINE})
    assert usage == {
        "line_id": ANA_LINE,
        "data_used_gb": 2.0,
        "data_limit_gb": 5.0,
        "data_refueling_gb": 0.0,
        "cycle_end_date": "2025-02-28",
    }
    assert "not found for customer" in refused(state, "get_data_usage", {"customer_id": ANA, "line_id": BO_LINE})


def test_suspend_and_resume(state: DomainState) -> None:
    out = call(state, "suspend_line", {"customer_id": ANA, "line_id": ANA_LINE, "reason": "lost phone"})
    assert out["line"]["status"] == "Suspended" and out["line"]["suspension_start_date"] == "2025-02-25"
    assert not phone(state).surroundings.line_active  # synced to the phone
    assert "active to suspend" in refused(
        state, "suspend_line", {"customer_id": ANA, "line_id": ANA_LINE, "reason": "again"}
    )
    out = call(state, "resume_line", {"customer_id": ANA, "line_id": ANA_LINE})
    assert out["line"]["status"] == "Active" and out["line"]["suspension_start_date"] is None
    assert phone(state).surroundings.line_active
    refused(state, "resume_line", {"customer_id": ANA, "line_id": ANA_LINE})
    refused(state, "resume_line", {"customer_id": BO, "line_id": ANA_LINE2})  # not Bo's line


def test_roaming_toggles_report_no_op(state: DomainState) -> None:
    before = state.hash()
    assert "already disabled" in call(state, "disable_roaming", {"customer_id": ANA, "line_id": ANA_LINE})
    assert state.hash() == before
    call(state, "enable_roaming", {"customer_id": ANA, "line_id": ANA_LINE})
    assert line(state, ANA_LINE).roaming_enabled and phone(state).surroundings.roaming_allowed
    assert "already enabled" in call(state, "enable_roaming", {"customer_id": ANA, "line_id": ANA_LINE})


def test_refuel_charges_the_draft_bill(state: DomainState) -> None:
    out = call(state, "refuel_data", {"customer_id": ANA, "line_id": ANA_LINE, "gb_amount": 2})
    assert out["new_data_refueling_gb"] == 2.0 and out["charge"] == 10.0
    draft = bill(state, DRAFT)
    assert draft.total_due == 10.0 and draft.line_items[-1].amount == 10.0
    assert holds(state, "assert_data_refueling_amount", customer_id=ANA, line_id=ANA_LINE, expected_amount=2.0)
    assert "positive" in refused(state, "refuel_data", {"customer_id": ANA, "line_id": ANA_LINE, "gb_amount": 0})
    refused(state, "refuel_data", {"customer_id": ANA, "line_id": BO_LINE, "gb_amount": 1.0})


def test_refuel_without_draft_creates_a_bill_deterministically() -> None:
    ids = []
    for _ in range(2):
        s = _tiny_state()
        call(s, "refuel_data", {"customer_id": BO, "line_id": BO_LINE, "gb_amount": 1.5})
        customer = next(c for c in db(s).customers if c.customer_id == BO)
        new = bill(s, customer.bill_ids[-1])
        assert new.status == "Draft" and new.total_due == 3.0 and new.period_start == date(2025, 3, 1)
        ids.append(new.bill_id)
    assert ids[0] == ids[1] and ids[0].startswith("B") and len(ids[0]) == 9


def test_payment_request_flow_and_sync(state: DomainState) -> None:
    assert "no pending" in user(state, "check_payment_request").lower()
    assert "not found for customer" in refused(state, "send_payment_request", {"customer_id": ANA, "bill_id": BO_BILL})
    call(state, "send_payment_request", {"customer_id": ANA, "bill_id": ISSUED})
    assert bill(state, ISSUED).status == "Awaiting Payment"
    assert "already awaiting" in refused(state, "send_payment_request", {"customer_id": ANA, "bill_id": DRAFT})
    request = phone(state).surroundings.payment_request
    assert request is not None and request.bill_id == ISSUED and request.amount_due == 40.0
    assert ISSUED in user(state, "check_payment_request")
    user(state, "make_payment")
    assert bill(state, ISSUED).status == "Paid" and phone(state).surroundings.payment_request is None
    refused(state, "make_payment", {}, side=Side.USER)
    assert call(state, "transfer_to_human_agents", {"summary": "done"}) == "Transfer successful"


# --------------------------------------------------------------------------------------------- user tools


def test_airplane_mode_and_status_bar(state: DomainState) -> None:
    assert holds(state, "assert_service_status", expected_status="connected")
    assert "Airplane" not in user(state, "check_status_bar")
    user(state, "toggle_airplane_mode")
    assert "Airplane Mode" in user(state, "check_status_bar")
    assert holds(state, "assert_service_status", expected_status="no_service")
    assert user(state, "run_speed_test") == "Speed test failed: No Connection."
    assert "Cannot" in user(state, "toggle_wifi") and not phone(state).device.wifi_enabled
    user(state, "toggle_airplane_mode")
    assert holds(state, "assert_service_status", expected_status="connected")
    assert holds(state, "assert_internet_speed", expected_speed=200, expected_desc="excellent")


def test_network_mode_speed_data_saver_and_vpn(state: DomainState) -> None:
    before = state.hash()
    assert user(state, "set_network_mode_preference", {"mode": "6g"}).startswith("Failed")  # a message, not an error
    assert state.hash() == before
    user(state, "set_network_mode_preference", {"mode": "2g_only"})
    assert phone(state).device.network_technology_connected == "2G"
    assert "Very Poor" in user(state, "run_speed_test")
    assert holds(state, "assert_internet_not_excellent") and not holds(
        state, "assert_can_send_mms", expected_status=True
    )
    user(state, "set_network_mode_preference", {"mode": "4g_only"})
    assert "(Good)" in user(state, "run_speed_test")
    user(state, "set_network_mode_preference", {"mode": "4g_5g_preferred"})
    user(state, "toggle_data_saver_mode")
    assert "(Good)" in user(state, "run_speed_test")  # 275 Mbps x 0.2
    user(state, "toggle_data_saver_mode")
    _setup(state, "break_vpn")
    assert "27.50 Mbps" in user(state, "run_speed_test") and "poor" in user(state, "check_vpn_status")
    assert not holds(state, "assert_internet_speed", expected_speed=200, expected_desc="excellent")
    user(state, "disconnect_vpn")
    assert "(Excellent)" in user(state, "run_speed_test")
    user(state, "connect_vpn")
    assert "(Excellent)" in user(state, "run_speed_test")  # the default server is fast


def test_sim_apn_and_reboot(state: DomainState) -> None:
    _setup(state, "unseat_sim_card")
    assert "No SIM" in user(state, "check_sim_status") and holds(
        state, "assert_service_status", expected_status="no_service"
    )
    user(state, "reseat_sim_card")
    assert holds(state, "assert_service_status", expected_status="connected")
    _setup(state, "break_apn_settings")
    assert "broken" in user(state, "check_apn_settings")
    user(state, "reset_apn_settings")
    assert holds(state, "assert_service_status", expected_status="no_service")  # only at the next reboot
    user(state, "reboot_device")
    assert holds(state, "assert_service_status", expected_status="connected")
    _setup(state, "lock_sim_card", mode="puk")
    for fix in ("reseat_sim_card", "reboot_device", "toggle_airplane_mode", "toggle_airplane_mode"):
        user(state, fix)
    assert holds(state, "assert_service_status", expected_status="no_service")  # nothing on the phone unlocks it


def test_mobile_data_needs_roaming_abroad_and_allowance(state: DomainState) -> None:
    assert holds(state, "assert_mobile_data_status", expected_status=True)
    _setup(state, "set_user_location", abroad=True)
    assert holds(state, "assert_mobile_data_status", expected_status=False)
    user(state, "toggle_roaming")
    assert holds(state, "assert_mobile_data_status", expected_status=False)  # the line is not roaming-enabled
    call(state, "enable_roaming", {"customer_id": ANA, "line_id": ANA_LINE})
    assert holds(state, "assert_mobile_data_status", expected_status=True)
    _setup(state, "set_data_usage", customer_id=ANA, line_id=ANA_LINE, data_used_gb=5.5)
    assert holds(state, "assert_mobile_data_usage_exceeded", expected_status=True)
    assert holds(state, "assert_mobile_data_status", expected_status=False)
    call(state, "refuel_data", {"customer_id": ANA, "line_id": ANA_LINE, "gb_amount": 1.0})
    assert holds(state, "assert_mobile_data_status", expected_status=True)
    user(state, "toggle_data")
    assert "Data Disabled" in user(state, "check_status_bar")
    assert holds(state, "assert_mobile_data_status", expected_status=False)


def test_mms_needs_permissions_apn_and_no_wifi_calling(state: DomainState) -> None:
    assert "can send" in user(state, "can_send_mms")
    _setup(state, "remove_app_permission", app_name="messaging", permission="storage")
    assert "cannot" in user(state, "can_send_mms")
    assert user(state, "grant_app_permission", {"app_name": "nope", "permission": "sms"}).startswith("Error.")
    assert user(state, "grant_app_permission", {"app_name": "messaging", "permission": "camera"}).startswith("Error.")
    user(state, "grant_app_permission", {"app_name": "Messaging", "permission": "STORAGE"})
    assert holds(state, "assert_can_send_mms", expected_status=True)
    _setup(state, "set_wifi_calling", enabled=True, mms_over_wifi=True)
    assert holds(state, "assert_can_send_mms", expected_status=False)
    user(state, "toggle_wifi_calling")
    assert holds(state, "assert_can_send_mms", expected_status=True)
    _setup(state, "break_apn_mms_setting")
    assert "Not set" in user(state, "check_apn_settings")
    user(state, "set_apn_settings", {"apn_settings": {"apn_name": "internet", "mmsc_url": "http://mms.example/m"}})
    assert holds(state, "assert_can_send_mms", expected_status=True)
    assert "messaging" in user(state, "check_installed_apps")
    assert "storage" in user(state, "check_app_permissions", {"app_name": "messaging"})


def test_overdue_suspension_setup(state: DomainState) -> None:
    _setup(
        state,
        "suspend_line_for_overdue_bill",
        customer_id=ANA,
        line_id=ANA_LINE,
        new_bill_id="B99",
        contract_ended=False,
    )
    assert bill(state, "B99").status == "Overdue" and bill(state, "B99").total_due == 40.0
    assert line(state, ANA_LINE).status == "Suspended" and not phone(state).surroundings.line_active
    assert holds(state, "assert_overdue_bill_exists", overdue_bill_id="B99")
    assert not holds(state, "assert_no_overdue_bill", overdue_bill_id="B99")
    assert holds(state, "assert_line_status", customer_id=ANA, line_id=ANA_LINE, expected_status="Suspended")
    with pytest.raises(ValueError):
        _setup(
            state,
            "suspend_line_for_overdue_bill",
            customer_id=ANA,
            line_id=ANA_LINE,
            new_bill_id="B99",
            contract_ended=True,
        )
    with pytest.raises(ValueError):  # setup arguments are checked like tool arguments
        _setup(state, "lock_sim_card", mode="pun")


# ------------------------------------------------------------------------------ malformed calls change nothing


def _wrong_value() -> st.SearchStrategy[Any]:
    return st.lists(st.integers(), max_size=2)  # a list fits no parameter of any telecom tool


@st.composite
def malformed_calls(draw: st.DrawFn) -> tuple[str, Side, str]:
    tool = draw(st.sampled_from(DOMAIN.tools))
    fields = tool.arguments.model_fields
    required = [n for n, f in fields.items() if f.is_required()]
    junk = st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none())
    arguments: dict[str, Any] = {n: draw(junk) for n in fields if draw(st.booleans())}
    how = draw(st.sampled_from(["extra", "wrong_type", "missing", "not_object"]))
    if how == "not_object":
        return tool.name, tool.side, json.dumps(draw(st.one_of(st.lists(st.integers()), st.integers(), st.text())))
    if how == "wrong_type" and fields:
        arguments[draw(st.sampled_from(sorted(fields)))] = draw(_wrong_value())
    elif how == "missing" and required:
        arguments.pop(draw(st.sampled_from(required)), None)
        for name in required:  # the others are well-formed strings
            if name in arguments and not isinstance(arguments[name], str):
                arguments[name] = "x"
    else:
        arguments["zz_" + draw(st.text(alphabet="abc", min_size=1, max_size=4))] = draw(junk)
    return tool.name, tool.side, json.dumps(arguments)


SMALL_STATE = generate_state(7, n_customers=15)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_calls())
def test_malformed_arguments_are_errors_and_change_nothing(case: tuple[str, Side, str]) -> None:
    name, side, arguments_json = case
    state = SMALL_STATE.copy()
    _setup(state, "set_user_info", name="Someone", phone_number=db(state).lines[0].phone_number)
    before = state.hash()
    result, _ = execute(
        DOMAIN,
        state,
        pb.ToolCall(
            name=name,
            arguments_json=arguments_json,
            side=pb.TOOL_SIDE_USER if side is Side.USER else pb.TOOL_SIDE_AGENT,
        ),
    )
    assert result.error, f"{name}({arguments_json}) should be refused, got {result.content}"
    assert result.error_kind in (pb.TOOL_ERROR_KIND_INVALID_ARGUMENTS, pb.TOOL_ERROR_KIND_INVALID_JSON)
    assert state.hash() == before


WRITE_AGENT_TOOLS = [t for t in DOMAIN.agent_tools if t.kind is ToolKind.WRITE]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(WRITE_AGENT_TOOLS),
    st.sampled_from([ANA, BO, "C404"]),
    st.sampled_from([ANA_LINE, ANA_LINE2, BO_LINE, "L404"]),
    st.sampled_from([ISSUED, BO_BILL, "B404"]),
    st.floats(min_value=-5, max_value=0),
)
def test_failing_writes_change_nothing(tool: Any, customer_id: str, line_id: str, bill_id: str, gb: float) -> None:
    state = _tiny_state()
    call(state, "send_payment_request", {"customer_id": ANA, "bill_id": ISSUED})  # a second request must fail
    call(state, "suspend_line", {"customer_id": BO, "line_id": BO_LINE, "reason": "test"})
    candidates = {"customer_id": customer_id, "line_id": line_id, "bill_id": bill_id, "gb_amount": gb, "reason": "r"}
    arguments = {k: v for k, v in candidates.items() if k in tool.arguments.model_fields}
    before = state.hash()
    result, _ = execute(DOMAIN, state, tool_call(tool.name, arguments))
    if result.error:
        assert result.error_kind == pb.TOOL_ERROR_KIND_TOOL_FAILED
        assert state.hash() == before


# -------------------------------------------------------------------------------------------- generator


def test_generator_is_deterministic_and_realistic() -> None:
    a, b, c = generate_state(3), generate_state(3), generate_state(4)
    assert a.hash() == b.hash() and a.hash() != c.hash()
    company = db(a)
    assert len(company.customers) >= 200 and len(company.lines) >= 300 and len(company.bills) >= 500
    numbers = [x.phone_number for x in company.lines] + [x.phone_number for x in company.customers]
    assert len(numbers) == len(set(numbers))
    lines = {x.line_id: x for x in company.lines}
    bills = {x.bill_id: x for x in company.bills}
    plans = {p.plan_id for p in company.plans}
    devices = {d.device_id for d in company.devices}
    for customer in company.customers:
        assert all(line_id in lines for line_id in customer.line_ids)
        assert all(bills[bill_id].customer_id == customer.customer_id for bill_id in customer.bill_ids)
    assert all(x.plan_id in plans and x.device_id in devices for x in company.lines)
    assert {x.status for x in company.lines} == {"Active", "Suspended", "Pending Activation", "Closed"}
    assert {"Draft", "Issued", "Paid", "Overdue"} <= {x.status for x in company.bills}
    assert DOMAIN.initial_state(3).hash() == a.hash()


# --------------------------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("goal", sorted(SAMPLERS))
def test_sampled_scenarios_break_and_get_fixed(goal: str) -> None:
    for seed in (0, 1):
        base = DOMAIN.initial_state(seed)
        scenario = SAMPLERS[goal](base, random.Random(seed))
        assert scenario is not None and scenario.goal == goal
        assert scenario == SAMPLERS[goal](base, random.Random(seed))  # deterministic for an rng seed
        entities = scenario.entities
        assert entities["breaks"] and entities["line_id"] and entities["customer_id"]
        assert scenario.allowed is (goal not in ("locked_sim_transfer", "contract_end_suspension"))
        session = EnvSession(
            DOMAIN, initial_state=pb.InitialState(actions=action_calls(entities["setup_actions"])), seed=seed
        )
        checks = json.loads(entities["assertions"])
        before = [holds(session.state, a["function"], **a["arguments"]) == a["expected"] for a in checks]
        assert all(before) is (not scenario.allowed), f"{goal} {entities['breaks']}: before the fix {before}"
        for fix in action_calls(entities["fix_actions"]):
            result = session.call(fix)
            assert not result.error, f"{goal}: {fix.name} failed: {result.content}"
        checker = pb.Checker(
            gold_actions=action_calls(entities["fix_actions"]),
            assertions=state_assertions(entities["assertions"]),
            reward_basis=[pb.REWARD_COMPONENT_ASSERTION, pb.REWARD_COMPONENT_STATE],
        )
        reward = session.evaluate(checker=checker)
        assert reward.value == 1.0, f"{goal} {entities['breaks']}: {reward.failure_reason}"


# ---------------------------------------------------------------------------------------------- tau2 data


def _tau2_train_tasks() -> list[dict[str, Any]]:
    if not (TAU2_DIR / "tasks.json").exists():
        return []
    train = set(json.loads((TAU2_DIR / "split_tasks.json").read_text())["train"])
    return [t for t in json.loads((TAU2_DIR / "tasks.json").read_text()) if t["id"] in train]


TAU2_TASKS = _tau2_train_tasks()


@pytest.fixture(scope="module")
def tau2_domain() -> Domain:
    """The telecom domain started from tau2's files instead of the generator, so sessions run tau2 tasks."""
    if not (TAU2_DIR / "db.toml").exists():
        pytest.skip(TAU2_MISSING)
    start = load_tau2_state(TAU2_DIR)
    return dataclasses.replace(DOMAIN, make_state=lambda seed: start.copy())


def test_tau2_data_loads() -> None:
    if not (TAU2_DIR / "db.toml").exists():
        pytest.skip(TAU2_MISSING)
    state = DOMAIN.from_tau2(TAU2_DIR) if DOMAIN.from_tau2 else None
    assert state is not None
    company = db(state)
    assert (
        len(company.plans),
        len(company.customers),
        len(company.lines),
        len(company.bills),
        len(company.devices),
    ) == (5, 4, 9, 6, 9)
    john = call(state, "get_customer_by_phone", {"phone_number": "555-123-2002"})
    assert john["customer_id"] == "C1001" and john["line_ids"] == ["L1001", "L1002", "L1003"]
    device = phone(state).device
    assert device.network_technology_connected == "5G" and device.app_statuses["messaging"].permissions.sms


def _side(env_type: str) -> Side:
    return Side.USER if env_type == "user" else Side.AGENT


@pytest.mark.skipif(not TAU2_TASKS, reason=TAU2_MISSING)
def test_tau2_train_split_is_complete() -> None:
    assert len(TAU2_TASKS) == 74
    used = {a["func_name"] for t in TAU2_TASKS for a in t["initial_state"]["initialization_actions"]}
    assert used <= set(DOMAIN.setup_functions) | {t.name for t in DOMAIN.tools}
    asserted = {a["func_name"] for t in TAU2_TASKS for a in t["evaluation_criteria"]["env_assertions"]}
    assert asserted <= set(DOMAIN.assertions)


@pytest.mark.parametrize("task", TAU2_TASKS, ids=[t["id"] for t in TAU2_TASKS])
def test_tau2_task_replays(task: dict[str, Any], tau2_domain: Domain) -> None:
    """Setup breaks the phone (the assertions fail), the gold actions fix it (they all hold), as in tau2.

    Tasks graded on ACTION too (locked SIM, contract ended) are not fixable: their assertion (no service)
    holds before and after, and the gold action is the transfer.
    """
    initial = pb.InitialState(
        actions=[
            tool_call(a["func_name"], a["arguments"], side=_side(a["env_type"]))
            for a in task["initial_state"]["initialization_actions"]
        ]
    )
    criteria = task["evaluation_criteria"]
    session = EnvSession(tau2_domain, initial_state=initial)
    checks = criteria["env_assertions"]
    before = [holds(session.state, a["func_name"], **a["arguments"]) == a["assert_value"] for a in checks]
    fixable = "ACTION" not in criteria["reward_basis"]
    if fixable:
        assert not all(before), "the setup should leave the issue broken"
    else:
        assert all(before), "an unfixable task's assertions hold from the start"
    gold = [tool_call(a["name"], a["arguments"], side=_side(a["requestor"])) for a in criteria["actions"]]
    for action in gold:
        result = session.call(action)
        assert not result.error, f"gold action {action.name} failed: {result.content}"
    failing = [
        a["func_name"] for a in checks if holds(session.state, a["func_name"], **a["arguments"]) != a["assert_value"]
    ]
    assert not failing, f"assertions still failing after the gold actions: {failing}"
    checker = pb.Checker(
        gold_actions=gold,
        assertions=[
            pb.StateAssertion(
                function=a["func_name"],
                arguments_json=json.dumps(a["arguments"]),
                expected_json=json.dumps(a["assert_value"]),
            )
            for a in checks
        ],
        reward_basis=[pb.REWARD_COMPONENT_ASSERTION, pb.REWARD_COMPONENT_STATE],
    )
    reward = session.evaluate(checker=checker)
    assert reward.value == 1.0, reward.failure_reason
