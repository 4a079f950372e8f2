"""Telecom tools (dual control): 13 agent tools over the company's records, 30 user tools over the user's phone.

Also here: `sync` (keeps the phone's view of the line, roaming, data allowance and payment request in step
with the company's records), the hidden setup functions tau2 tasks use to break a phone or an account, and
the env-assertion functions they are graded with. Semantics follow tau2-bench's telecom domain; where tau2
is random (the id of a bill created by a refuel) the id is derived from the state instead.

Agent-DB entities are reached by index and replaced whole (`db.lines[i] = line.model_copy(update=...)`),
after every check has passed, so a failing call leaves the state unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar, get_type_hints

from pydantic import ConfigDict, Field, create_model

from eigenloop.domains.base import DomainState, Side, ToolError, ToolKind, tool
from eigenloop.domains.telecom.db import (
    NETWORK_MODES,
    TODAY,
    APNSettings,
    Bill,
    BillStatus,
    Customer,
    Device,
    Line,
    LineItem,
    LineStatus,
    NetworkModePreference,
    NetworkStatus,
    NetworkTechnology,
    PaymentRequest,
    Plan,
    TelecomDB,
    TelecomUserDB,
    VpnDetails,
    month_end,
    month_start,
)

CustomerId = Annotated[str, Field(description="Customer id, e.g. C1001", max_length=32)]
LineId = Annotated[str, Field(description="Line id, e.g. L1002", max_length=32)]
BillId = Annotated[str, Field(description="Bill id, e.g. B1002", max_length=32)]
PhoneNumber = Annotated[str, Field(description="Phone number, e.g. 555-123-2002", max_length=32)]
AppName = Annotated[str, Field(description="App name, e.g. messaging", max_length=64)]
Permission = Annotated[str, Field(description="One of sms, storage, phone, network", max_length=32)]

T = TypeVar("T")


def _find(items: list[T], key: Callable[[T], object], value: object) -> int | None:
    """Index of the first item whose key equals `value` (lookups only; callers mutate by index afterwards)."""
    for i, item in enumerate(items):
        if key(item) == value:
            return i
    return None


# ------------------------------------------------------------------------------------ agent-side lookups


def _customer_at(db: TelecomDB, customer_id: str) -> int:
    i = _find(db.customers, lambda c: c.customer_id, customer_id)
    if i is None:
        raise ToolError(f"Customer {customer_id} not found")
    return i


def _line_at(db: TelecomDB, line_id: str) -> int:
    i = _find(db.lines, lambda line: line.line_id, line_id)
    if i is None:
        raise ToolError(f"Line {line_id} not found")
    return i


def _owned_line_at(db: TelecomDB, customer_id: str, line_id: str) -> int:
    customer = db.customers[_customer_at(db, customer_id)]
    if line_id not in customer.line_ids:
        raise ToolError(f"Line {line_id} not found for customer {customer_id}")
    return _line_at(db, line_id)


def _bill_at(db: TelecomDB, bill_id: str) -> int:
    i = _find(db.bills, lambda b: b.bill_id, bill_id)
    if i is None:
        raise ToolError(f"Bill {bill_id} not found")
    return i


def _plan(db: TelecomDB, plan_id: str) -> Plan:
    i = _find(db.plans, lambda p: p.plan_id, plan_id)
    if i is None:
        raise ToolError(f"Plan {plan_id} not found")
    return db.plans[i]


def _device(db: TelecomDB, device_id: str) -> Device:
    i = _find(db.devices, lambda d: d.device_id, device_id)
    if i is None:
        raise ToolError(f"Device {device_id} not found")
    return db.devices[i]


def _customer_bills(db: TelecomDB, customer: Customer) -> list[Bill]:
    by_id = {b.bill_id: b for b in db.bills}
    return [by_id[bill_id] for bill_id in customer.bill_ids if bill_id in by_id]


def _set_line(db: TelecomDB, index: int, **changes: Any) -> Line:
    line = db.lines[index].model_copy(update=changes)
    db.lines[index] = line
    return line


def _set_bill_status(db: TelecomDB, index: int, status: BillStatus) -> None:
    db.bills[index] = db.bills[index].model_copy(update={"status": status})


def _new_bill_id(db: TelecomDB, customer_id: str) -> str:
    """A fresh `B<8 hex>` id derived from the state (tau2 draws it at random), so replays agree."""
    existing = {b.bill_id for b in db.bills}
    salt = 0
    while True:
        digest = hashlib.sha256(f"{customer_id}:{len(db.bills)}:{salt}".encode()).hexdigest()[:8].upper()
        if f"B{digest}" not in existing:
            return f"B{digest}"
        salt += 1


# ------------------------------------------------------------------------------------------- agent tools


@tool(kind=ToolKind.READ)
def get_customer_by_phone(db: TelecomDB, phone_number: PhoneNumber) -> Customer:
    """Find a customer by a phone number: their contact number or the number of any of their lines."""
    i = _find(db.customers, lambda c: c.phone_number, phone_number)
    if i is not None:
        return db.customers[i]
    line = _find(db.lines, lambda line: line.phone_number, phone_number)
    if line is not None:
        line_id = db.lines[line].line_id
        owner = _find(db.customers, lambda c: line_id in c.line_ids, True)
        if owner is not None:
            return db.customers[owner]
    raise ToolError(f"Customer with phone number {phone_number} not found")


@tool(kind=ToolKind.READ)
def get_customer_by_id(db: TelecomDB, customer_id: CustomerId) -> Customer:
    """Look up a customer by customer id: profile, account status, payment methods, line ids and bill ids."""
    return db.customers[_customer_at(db, customer_id)]


@tool(kind=ToolKind.READ)
def get_customer_by_name(
    db: TelecomDB,
    full_name: Annotated[str, Field(description="The customer's full name (case-insensitive)", max_length=200)],
    dob: Annotated[str, Field(description="Date of birth, YYYY-MM-DD", max_length=32)],
) -> list[Customer]:
    """Find customers by full name and date of birth (both must match). Returns a possibly empty list."""
    wanted = full_name.lower()
    return [c for c in db.customers if c.full_name.lower() == wanted and c.date_of_birth.isoformat() == dob]


@tool(kind=ToolKind.READ)
def get_details_by_id(
    db: TelecomDB,
    id: Annotated[
        str,
        Field(
            description="A line (L...), device (D...), bill (B...), customer (C...) or plan (P...) id", max_length=32
        ),
    ],
) -> Line | Device | Bill | Customer | Plan:
    """Look up any record by its id; the first letter says what it is (L line, D device, B bill, C customer, P plan)."""
    if id.startswith("L"):
        return db.lines[_line_at(db, id)]
    if id.startswith("D"):
        return _device(db, id)
    if id.startswith("B"):
        return db.bills[_bill_at(db, id)]
    if id.startswith("C"):
        return db.customers[_customer_at(db, id)]
    if id.startswith("P"):
        return _plan(db, id)
    raise ToolError(f"Unknown ID format or type: {id}")


@tool(kind=ToolKind.READ)
def get_bills_for_customer(
    db: TelecomDB,
    customer_id: CustomerId,
    limit: Annotated[int, Field(description="How many bills to return, newest first", ge=1, le=100)] = 12,
) -> list[Bill]:
    """A customer's bills, newest issue date first, at most `limit` of them."""
    customer = db.customers[_customer_at(db, customer_id)]
    bills = sorted(_customer_bills(db, customer), key=lambda b: b.issue_date, reverse=True)
    return bills[:limit]


@tool(kind=ToolKind.READ)
def get_data_usage(db: TelecomDB, customer_id: CustomerId, line_id: LineId) -> dict[str, Any]:
    """A line's data usage this billing cycle: GB used, the plan's limit, GB refueled and the cycle's end date."""
    line = db.lines[_owned_line_at(db, customer_id, line_id)]
    plan = _plan(db, line.plan_id)
    return {
        "line_id": line.line_id,
        "data_used_gb": line.data_used_gb,
        "data_limit_gb": plan.data_limit_gb,
        "data_refueling_gb": line.data_refueling_gb,
        "cycle_end_date": month_end(TODAY).isoformat(),
    }


@tool(kind=ToolKind.WRITE)
def suspend_line(
    db: TelecomDB,
    customer_id: CustomerId,
    line_id: LineId,
    reason: Annotated[str, Field(description="Why the line is suspended", max_length=500)],
) -> dict[str, Any]:
    """Suspend an active line of a customer, starting today."""
    i = _owned_line_at(db, customer_id, line_id)
    if db.lines[i].status != "Active":
        raise ToolError("Line must be active to suspend")
    line = _set_line(db, i, status="Suspended", suspension_start_date=TODAY)
    return {"message": f"Line {line_id} suspended. Reason: {reason}", "line": line}


@tool(kind=ToolKind.WRITE)
def resume_line(db: TelecomDB, customer_id: CustomerId, line_id: LineId) -> dict[str, Any]:
    """Reactivate a suspended (or pending-activation) line of a customer."""
    i = _owned_line_at(db, customer_id, line_id)
    resumable: tuple[LineStatus, ...] = ("Suspended", "Pending Activation")
    if db.lines[i].status not in resumable:
        raise ToolError("Line must be suspended or pending activation to resume")
    line = _set_line(db, i, status="Active", suspension_start_date=None)
    return {"message": f"Line {line_id} resumed", "line": line}


@tool(kind=ToolKind.WRITE)
def send_payment_request(db: TelecomDB, customer_id: CustomerId, bill_id: BillId) -> str:
    """Send the customer a payment request for one of their bills; the bill becomes Awaiting Payment.

    Only one bill per customer may await payment at a time. This does not check the bill's status.
    """
    customer = db.customers[_customer_at(db, customer_id)]
    if bill_id not in customer.bill_ids:
        raise ToolError(f"Bill {bill_id} not found for customer {customer_id}")
    i = _bill_at(db, bill_id)
    if any(b.status == "Awaiting Payment" for b in _customer_bills(db, customer)):
        raise ToolError("A bill is already awaiting payment for this customer")
    _set_bill_status(db, i, "Awaiting Payment")
    return f"Payment request sent to the customer for bill {bill_id}"


def _set_roaming(db: TelecomDB, customer_id: str, line_id: str, enabled: bool) -> str:
    i = _owned_line_at(db, customer_id, line_id)
    word = "enabled" if enabled else "disabled"
    if db.lines[i].roaming_enabled is enabled:
        return f"Roaming was already {word}"
    _set_line(db, i, roaming_enabled=enabled)
    return f"Roaming {word} successfully for line {line_id}"


@tool(kind=ToolKind.WRITE)
def enable_roaming(db: TelecomDB, customer_id: CustomerId, line_id: LineId) -> str:
    """Enable international roaming on a customer's line."""
    return _set_roaming(db, customer_id, line_id, True)


@tool(kind=ToolKind.WRITE)
def disable_roaming(db: TelecomDB, customer_id: CustomerId, line_id: LineId) -> str:
    """Disable international roaming on a customer's line."""
    return _set_roaming(db, customer_id, line_id, False)


@tool(kind=ToolKind.WRITE)
def refuel_data(
    db: TelecomDB,
    customer_id: CustomerId,
    line_id: LineId,
    gb_amount: Annotated[float, Field(description="GB of data to add (positive)", allow_inf_nan=False)],
) -> dict[str, Any]:
    """Add data to a line for this cycle, charged at the plan's refueling price per GB on the customer's draft bill."""
    li = _owned_line_at(db, customer_id, line_id)
    if gb_amount <= 0:
        raise ToolError("Refuel amount must be positive")
    ci = _customer_at(db, customer_id)
    customer, line = db.customers[ci], db.lines[li]
    plan = _plan(db, line.plan_id)
    charge = round(gb_amount * plan.data_refueling_price_per_gb, 2)
    item = LineItem(
        description=f"Data refueling {gb_amount:g} GB - Line {line.phone_number}",
        amount=charge,
        date=TODAY,
        item_type="Charge",
    )
    draft = next((b.bill_id for b in _customer_bills(db, customer) if b.status == "Draft"), None)
    # Every check has passed: change the line, then the bill.
    line = _set_line(db, li, data_refueling_gb=line.data_refueling_gb + gb_amount)
    if draft is not None:
        bi = _bill_at(db, draft)
        bill = db.bills[bi]
        db.bills[bi] = bill.model_copy(
            update={"line_items": [*bill.line_items, item], "total_due": round(bill.total_due + charge, 2)}
        )
    else:
        bill_id = _new_bill_id(db, customer_id)
        start = month_start(TODAY, 1)
        db.bills.append(
            Bill(
                bill_id=bill_id,
                customer_id=customer_id,
                period_start=start,
                period_end=month_end(start),
                issue_date=start,
                total_due=charge,
                due_date=start + timedelta(days=14),
                line_items=[item],
                status="Draft",
            )
        )
        db.customers[ci] = customer.model_copy(update={"bill_ids": [*customer.bill_ids, bill_id]})
    return {
        "message": f"Successfully added {gb_amount:g} GB of data to line {line_id} for ${charge:.2f}",
        "new_data_refueling_gb": line.data_refueling_gb,
        "charge": charge,
    }


@tool(kind=ToolKind.GENERIC)
def transfer_to_human_agents(
    db: TelecomDB,
    summary: Annotated[str, Field(description="A summary of the user's issue for the human agent", max_length=2000)],
) -> str:
    """Transfer the user to a human agent, with a summary of the issue. Only when the issue cannot be solved here."""
    return "Transfer successful"


# ---------------------------------------------------------------------------------------- the phone model


def sim_status(user: TelecomUserDB) -> str:
    return "missing" if user.device.sim_card_missing else user.device.sim_card_status


def _no_service(user: TelecomUserDB) -> None:
    user.device.network_connection_status = "no_service"
    user.device.network_technology_connected = "none"
    user.device.network_signal_strength = "none"


def network_search(user: TelecomUserDB) -> None:
    """Re-register on the network: what the phone connects to given its SIM, settings and surroundings."""
    device, around = user.device, user.surroundings
    if sim_status(user) == "active":
        technology: NetworkTechnology
        if device.network_mode_preference == "4g_5g_preferred":
            technology = "5G" if around.signal_strength.get("5G", "none") != "none" else "4G"
        elif device.network_mode_preference == "4g_only":
            technology = "4G"
        elif device.network_mode_preference == "3g_only":
            technology = "3G"
        else:
            technology = "2G"
        device.network_connection_status = "connected"
        device.network_technology_connected = technology
        device.network_signal_strength = around.signal_strength.get(technology, "none")
    else:
        _no_service(user)
    if device.airplane_mode or device.active_apn_settings.apn_name == "broken" or not around.line_active:
        _no_service(user)


def mobile_data_working(user: TelecomUserDB) -> bool:
    device, around = user.device, user.surroundings
    if device.airplane_mode or device.network_signal_strength == "none":
        return False
    if device.network_connection_status == "no_service" or not device.data_enabled:
        return False
    if around.is_abroad and not (device.roaming_enabled and around.roaming_allowed):
        return False
    return not around.mobile_data_usage_exceeded


SPEED_RANGES: dict[str, tuple[float, float]] = {
    "2G": (0.1, 0.4),
    "3G": (1.0, 5.0),
    "4G": (10.0, 100.0),
    "5G": (50.0, 500.0),
}
SIGNAL_FACTORS: dict[str, float] = {"none": 0.0, "poor": 0.2, "fair": 0.5, "good": 0.8, "excellent": 1.0}


def speed(user: TelecomUserDB) -> tuple[float | None, str]:
    """Download speed in Mbps and its label; (None, "No Connection") when mobile data does not work."""
    if not mobile_data_working(user):
        return None, "No Connection"
    device = user.device
    base = 1.0
    if device.vpn_connected and device.vpn_details is not None and device.vpn_details.server_performance == "poor":
        base *= 0.1
    if device.data_saver_mode:
        base *= 0.2
    low, high = SPEED_RANGES.get(device.network_technology_connected, (0.0, 0.0))
    mbps = (low + high) / 2 * SIGNAL_FACTORS[device.network_signal_strength] * base
    label = (
        "Very Poor"
        if mbps < 1
        else "Poor"
        if mbps < 5
        else "Fair"
        if mbps < 25
        else "Good"
        if mbps < 100
        else "Excellent"
    )
    return mbps, label


def mms_working(user: TelecomUserDB) -> bool:
    device = user.device
    if not mobile_data_working(user) or device.network_technology_connected == "2G":
        return False
    if device.wifi_calling_enabled and device.wifi_calling_mms_over_wifi:
        return False
    if not device.active_apn_settings.mmsc_url:
        return False
    messaging = device.app_statuses.get("messaging")
    return messaging is not None and messaging.permissions.sms and messaging.permissions.storage


SIGNAL_ICONS = {
    "none": "📵 No Signal",
    "poor": "📶¹ Poor",
    "fair": "📶² Fair",
    "good": "📶³ Good",
    "excellent": "📶⁴ Excellent",
}


def status_bar(user: TelecomUserDB) -> str:
    device = user.device
    parts: list[str] = []
    if device.airplane_mode:
        parts.append("✈️ Airplane Mode")
    else:
        parts.append(SIGNAL_ICONS[device.network_signal_strength])
        if device.network_technology_connected != "none":
            parts.append(device.network_technology_connected)
        if device.data_enabled and device.network_technology_connected != "none":
            parts.append("📱 Data Enabled" + (" (🔽 Data Saver)" if device.data_saver_mode else ""))
        else:
            parts.append("📵 Data Disabled")
    if device.wifi_enabled:
        parts.append(f"📡 Connected to {device.wifi_ssid}" if device.wifi_connected else "📡 Enabled")
    if device.vpn_connected:
        parts.append("🔒 VPN Connected")
    parts.append(f"🔋 {device.battery_level}%")
    return "Status Bar: " + " | ".join(parts)


def _done(user: TelecomUserDB, message: str) -> str:
    return f"{message}\n{status_bar(user)}"


def _toggle_airplane_mode(user: TelecomUserDB) -> None:
    device = user.device
    device.airplane_mode = not device.airplane_mode
    device.wifi_connected = False
    device.wifi_ssid = None
    device.wifi_signal_strength = "none"
    if device.airplane_mode:
        device.vpn_connected = False
    else:
        device.network_connection_status = "searching"
    network_search(user)


# ------------------------------------------------------------------------------------- user tools (read)


@tool(kind=ToolKind.READ, side=Side.USER)
def check_status_bar(user: TelecomUserDB) -> str:
    """(On your phone) Look at the status bar: airplane mode, signal, network type, mobile data, Wi-Fi, VPN, battery."""
    return status_bar(user)


@tool(kind=ToolKind.READ, side=Side.USER)
def check_network_status(user: TelecomUserDB) -> str:
    """(On your phone) Check the connection: airplane mode, SIM, cellular status and signal, data, roaming, Wi-Fi."""
    d = user.device
    return "\n".join(
        [
            f"Airplane Mode: {'ON' if d.airplane_mode else 'OFF'}",
            f"SIM Card Status: {sim_status(user)}",
            f"Cellular Connection: {d.network_connection_status}",
            f"Cellular Signal: {d.network_signal_strength}",
            f"Cellular Network Type: {d.network_technology_connected}",
            f"Mobile Data Enabled: {'Yes' if d.data_enabled else 'No'}",
            f"Data Roaming Enabled: {'Yes' if d.roaming_enabled else 'No'}",
            f"Wi-Fi Radio: {'ON' if d.wifi_enabled else 'OFF'}",
            f"Wi-Fi Connected: {d.wifi_ssid if d.wifi_connected else 'No'}",
        ]
    )


@tool(kind=ToolKind.READ, side=Side.USER)
def check_network_mode_preference(user: TelecomUserDB) -> str:
    """(On your phone) Check which network types the phone prefers (4g_5g_preferred, 4g_only, 3g_only, 2g_only)."""
    return f"Network Mode Preference: {user.device.network_mode_preference}"


@tool(kind=ToolKind.READ, side=Side.USER)
def run_speed_test(user: TelecomUserDB) -> str:
    """(On your phone) Run a mobile data speed test: the download speed and how good it is, or no connection."""
    mbps, label = speed(user)
    if mbps is None:
        return "Speed test failed: No Connection."
    return f"Speed test result: {mbps:.2f} Mbps download ({label})."


@tool(kind=ToolKind.READ, side=Side.USER)
def check_sim_status(user: TelecomUserDB) -> str:
    """(On your phone) Check the SIM card: active, missing, or locked by PIN or PUK."""
    status = sim_status(user)
    text = {
        "active": "Your SIM card is active and working.",
        "missing": "No SIM card detected in the phone.",
        "locked_pin": "The SIM card is locked with a PIN code.",
        "locked_puk": "The SIM card is locked with a PUK code.",
    }
    return text[status]


@tool(kind=ToolKind.READ, side=Side.USER)
def check_data_restriction_status(user: TelecomUserDB) -> str:
    """(On your phone) Check whether Data Saver mode is limiting data."""
    return f"Data Saver mode is {'ON' if user.device.data_saver_mode else 'OFF'}."


@tool(kind=ToolKind.READ, side=Side.USER)
def check_apn_settings(user: TelecomUserDB) -> str:
    """(On your phone) Check the APN (carrier access point) settings: APN name and the MMSC URL for picture messages."""
    apn = user.device.active_apn_settings
    return f"APN Name: {apn.apn_name}\nMMSC URL: {apn.mmsc_url or 'Not set'}"


@tool(kind=ToolKind.READ, side=Side.USER)
def check_wifi_status(user: TelecomUserDB) -> str:
    """(On your phone) Check Wi-Fi: whether it is on and which network it is connected to."""
    d = user.device
    if not d.wifi_enabled:
        return "Wi-Fi is OFF."
    if d.wifi_connected:
        return f"Wi-Fi is ON and connected to {d.wifi_ssid} (signal: {d.wifi_signal_strength})."
    return "Wi-Fi is ON but not connected to any network."


@tool(kind=ToolKind.READ, side=Side.USER)
def check_wifi_calling_status(user: TelecomUserDB) -> str:
    """(On your phone) Check whether Wi-Fi Calling is on."""
    return f"Wi-Fi Calling is {'ON' if user.device.wifi_calling_enabled else 'OFF'}."


@tool(kind=ToolKind.READ, side=Side.USER)
def check_vpn_status(user: TelecomUserDB) -> str:
    """(On your phone) Check whether a VPN is on and connected, with its server details."""
    d = user.device
    if not d.vpn_connected:
        return f"VPN is {'ON' if d.vpn_enabled_setting else 'OFF'} and not connected."
    details = d.vpn_details
    if details is None:
        return "VPN is ON and connected."
    return (
        f"VPN is ON and connected to {details.server_address} ({details.protocol}); "
        f"server performance: {details.server_performance}."
    )


@tool(kind=ToolKind.READ, side=Side.USER)
def check_installed_apps(user: TelecomUserDB) -> str:
    """(On your phone) List the installed apps."""
    return "Installed apps: " + ", ".join(sorted(user.device.app_statuses))


def _permissions_text(user: TelecomUserDB, app_name: str) -> str:
    app = user.device.app_statuses.get(app_name.lower())
    if app is None:
        return f"App '{app_name}' is not installed."
    granted = [name for name, on in app.permissions.model_dump().items() if on]
    return f"{app.app_name} permissions granted: {', '.join(granted) if granted else 'none'}"


@tool(kind=ToolKind.READ, side=Side.USER)
def check_app_status(user: TelecomUserDB, app_name: AppName) -> str:
    """(On your phone) Check an app's status and the permissions it has."""
    return _permissions_text(user, app_name)


@tool(kind=ToolKind.READ, side=Side.USER)
def check_app_permissions(user: TelecomUserDB, app_name: AppName) -> str:
    """(On your phone) Check which permissions (sms, storage, phone, network) an app has been granted."""
    return _permissions_text(user, app_name)


@tool(kind=ToolKind.READ, side=Side.USER)
def can_send_mms(user: TelecomUserDB) -> str:
    """(On your phone) Try whether the messaging app can send a picture message (MMS)."""
    if mms_working(user):
        return "Your messaging app can send MMS messages."
    return "Your messaging app cannot send MMS messages."


@tool(kind=ToolKind.READ, side=Side.USER)
def check_payment_request(user: TelecomUserDB) -> str:
    """(On your phone) Check whether the carrier has sent you a payment request, and for how much."""
    request = user.surroundings.payment_request
    if request is None:
        return "You have no pending payment requests."
    state = "paid" if request.paid else "not paid yet"
    return f"Payment request for bill {request.bill_id}: amount due ${request.amount_due:.2f} ({state})."


# ------------------------------------------------------------------------------------ user tools (write)


@tool(kind=ToolKind.WRITE, side=Side.USER)
def toggle_airplane_mode(user: TelecomUserDB) -> str:
    """(On your phone) Turn Airplane Mode on or off (on cuts cellular, Wi-Fi and VPN)."""
    _toggle_airplane_mode(user)
    return _done(user, f"Airplane Mode is now {'ON' if user.device.airplane_mode else 'OFF'}.")


MODES: dict[str, NetworkModePreference] = {mode: mode for mode in NETWORK_MODES}


@tool(kind=ToolKind.WRITE, side=Side.USER)
def set_network_mode_preference(
    user: TelecomUserDB,
    mode: Annotated[str, Field(description="One of 4g_5g_preferred, 4g_only, 3g_only, 2g_only", max_length=32)],
) -> str:
    """(On your phone) Choose which network types the phone prefers to connect to."""
    preference = MODES.get(mode)
    if preference is None:
        return f"Failed to set network mode: '{mode}' is not one of {', '.join(NETWORK_MODES)}."
    user.device.network_mode_preference = preference
    network_search(user)
    return _done(user, f"Network mode preference set to {preference}.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def reseat_sim_card(user: TelecomUserDB) -> str:
    """(On your phone) Take the SIM card out and put it back in."""
    user.device.sim_card_missing = False
    network_search(user)
    return _done(user, "SIM card removed and re-inserted.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def toggle_data(user: TelecomUserDB) -> str:
    """(On your phone) Turn mobile data on or off."""
    user.device.data_enabled = not user.device.data_enabled
    network_search(user)
    return _done(user, f"Mobile data is now {'ON' if user.device.data_enabled else 'OFF'}.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def toggle_roaming(user: TelecomUserDB) -> str:
    """(On your phone) Turn data roaming on or off (needed for mobile data abroad)."""
    user.device.roaming_enabled = not user.device.roaming_enabled
    network_search(user)
    return _done(user, f"Data roaming is now {'ON' if user.device.roaming_enabled else 'OFF'}.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def toggle_data_saver_mode(user: TelecomUserDB) -> str:
    """(On your phone) Turn Data Saver mode on or off (on limits data and slows it down)."""
    user.device.data_saver_mode = not user.device.data_saver_mode
    return _done(user, f"Data Saver mode is now {'ON' if user.device.data_saver_mode else 'OFF'}.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def set_apn_settings(user: TelecomUserDB, apn_settings: APNSettings) -> str:
    """(On your phone) Replace the APN settings with the given ones."""
    user.device.active_apn_settings = apn_settings.model_copy(deep=True)
    network_search(user)
    return _done(user, "APN settings updated.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def reset_apn_settings(user: TelecomUserDB) -> str:
    """(On your phone) Reset the APN settings to the carrier defaults; this takes effect at the next reboot."""
    user.device.active_apn_settings.reset_at_reboot = True
    return _done(user, "APN settings will be reset to default at the next reboot.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def toggle_wifi(user: TelecomUserDB) -> str:
    """(On your phone) Turn Wi-Fi on or off."""
    device = user.device
    if device.airplane_mode:
        return _done(user, "Cannot change Wi-Fi while Airplane Mode is on.")
    device.wifi_enabled = not device.wifi_enabled
    if not device.wifi_enabled:
        device.wifi_connected = False
        device.wifi_ssid = None
        device.wifi_signal_strength = "none"
    return _done(user, f"Wi-Fi is now {'ON' if device.wifi_enabled else 'OFF'}.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def toggle_wifi_calling(user: TelecomUserDB) -> str:
    """(On your phone) Turn Wi-Fi Calling on or off."""
    user.device.wifi_calling_enabled = not user.device.wifi_calling_enabled
    return _done(user, f"Wi-Fi Calling is now {'ON' if user.device.wifi_calling_enabled else 'OFF'}.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def connect_vpn(user: TelecomUserDB) -> str:
    """(On your phone) Connect the VPN to its default server."""
    device = user.device
    if device.vpn_connected:
        return _done(user, "VPN is already connected.")
    device.vpn_enabled_setting = True
    device.vpn_connected = True
    device.vpn_details = VpnDetails(
        server_address="vpn.default.example:1194", protocol="OpenVPN", server_performance="excellent"
    )
    return _done(user, "VPN connected.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def disconnect_vpn(user: TelecomUserDB) -> str:
    """(On your phone) Disconnect the VPN."""
    device = user.device
    if not device.vpn_connected:
        return _done(user, "No VPN connection to disconnect.")
    device.vpn_enabled_setting = False
    device.vpn_connected = False
    device.vpn_details = None
    return _done(user, "VPN disconnected.")


PERMISSIONS = ("sms", "storage", "phone", "network")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def grant_app_permission(user: TelecomUserDB, app_name: AppName, permission: Permission) -> str:
    """(On your phone) Grant an app a permission (sms, storage, phone or network)."""
    app = user.device.app_statuses.get(app_name.lower())
    permission = permission.lower()
    if app is None:
        return f"Error. App '{app_name}' is not installed."
    if permission not in PERMISSIONS:
        return f"Error. Unknown permission '{permission}'; use one of {', '.join(PERMISSIONS)}."
    app.permissions = app.permissions.model_copy(update={permission: True})
    return _done(user, f"Permission {permission} granted to {app.app_name}.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def reboot_device(user: TelecomUserDB) -> str:
    """(On your phone) Restart the phone (applies a pending APN reset)."""
    device = user.device
    if device.active_apn_settings.reset_at_reboot:
        device.active_apn_settings = APNSettings()
    device.network_connection_status = "searching"
    network_search(user)
    return _done(user, "Phone restarted.")


@tool(kind=ToolKind.WRITE, side=Side.USER)
def make_payment(user: TelecomUserDB) -> str:
    """(On your phone) Pay the carrier's pending payment request."""
    request = user.surroundings.payment_request
    if request is None:
        raise ToolError("You have no pending payment request")
    if request.paid:
        raise ToolError(f"The payment request for bill {request.bill_id} is already paid")
    request.paid = True
    return _done(user, f"Paid ${request.amount_due:.2f} for bill {request.bill_id}.")


# ------------------------------------------------------------------------------------------------- sync


def _parts(state: DomainState) -> tuple[TelecomDB, TelecomUserDB]:
    db, user = state.db, state.user
    if not isinstance(db, TelecomDB) or not isinstance(user, TelecomUserDB):
        raise TypeError("not a telecom state")
    return db, user


def sync(state: DomainState) -> None:
    """Mirror the user's line into their surroundings (tau2's sync), through `surroundings.phone_number`.

    Line active, line roaming, data allowance exceeded; a paid payment request marks its bill Paid and is
    cleared; with no request pending, the customer's first bill Awaiting Payment becomes the request.
    """
    db, user = _parts(state)
    around = user.surroundings
    if around.phone_number is None:
        return
    li = _find(db.lines, lambda line: line.phone_number, around.phone_number)
    if li is None:
        return
    line = db.lines[li]
    around.line_active = line.status == "Active"
    around.roaming_allowed = line.roaming_enabled
    pi = _find(db.plans, lambda p: p.plan_id, line.plan_id)
    if pi is not None:
        around.mobile_data_usage_exceeded = line.data_used_gb >= db.plans[pi].data_limit_gb + line.data_refueling_gb
    request = around.payment_request
    if request is None:
        ci = _find(db.customers, lambda c: line.line_id in c.line_ids, True)
        if ci is None:
            return
        awaiting = next((b for b in _customer_bills(db, db.customers[ci]) if b.status == "Awaiting Payment"), None)
        if awaiting is not None:
            around.payment_request = PaymentRequest(bill_id=awaiting.bill_id, amount_due=awaiting.total_due)
    elif request.paid:
        bi = _find(db.bills, lambda b: b.bill_id, request.bill_id)
        if bi is not None:
            _set_bill_status(db, bi, "Paid")
        around.payment_request = None


# -------------------------------------------------------------------------------------- setup functions


def set_user_info(state: DomainState, name: str, phone_number: str) -> None:
    _, user = _parts(state)
    user.surroundings.name = name
    user.surroundings.phone_number = phone_number


def set_user_location(state: DomainState, abroad: bool) -> None:
    _parts(state)[1].surroundings.is_abroad = abroad


def turn_airplane_mode_on(state: DomainState) -> None:
    _, user = _parts(state)
    if not user.device.airplane_mode:
        _toggle_airplane_mode(user)


def turn_airplane_mode_off(state: DomainState) -> None:
    _, user = _parts(state)
    if user.device.airplane_mode:
        _toggle_airplane_mode(user)


def turn_data_on(state: DomainState) -> None:
    _parts(state)[1].device.data_enabled = True


def turn_data_off(state: DomainState) -> None:
    _parts(state)[1].device.data_enabled = False


def turn_roaming_on(state: DomainState) -> None:
    _parts(state)[1].device.roaming_enabled = True


def turn_roaming_off(state: DomainState) -> None:
    _parts(state)[1].device.roaming_enabled = False


def turn_data_saver_mode_on(state: DomainState) -> None:
    _parts(state)[1].device.data_saver_mode = True


def turn_data_saver_mode_off(state: DomainState) -> None:
    _parts(state)[1].device.data_saver_mode = False


def unseat_sim_card(state: DomainState) -> None:
    _, user = _parts(state)
    user.device.sim_card_missing = True
    network_search(user)


def lock_sim_card(state: DomainState, mode: Literal["pin", "puk"]) -> None:
    _, user = _parts(state)
    user.device.sim_card_status = "locked_pin" if mode == "pin" else "locked_puk"
    network_search(user)


def break_apn_settings(state: DomainState) -> None:
    _, user = _parts(state)
    user.device.active_apn_settings.apn_name = "broken"
    network_search(user)


def break_apn_mms_setting(state: DomainState) -> None:
    _parts(state)[1].device.active_apn_settings.mmsc_url = None


def break_vpn(state: DomainState) -> None:
    device = _parts(state)[1].device
    device.vpn_enabled_setting = True
    device.vpn_connected = True
    device.vpn_details = VpnDetails(
        server_address="vpn.far-away.example:1194", protocol="OpenVPN", server_performance="poor"
    )


def set_wifi_calling(state: DomainState, enabled: bool, mms_over_wifi: bool = False) -> None:
    device = _parts(state)[1].device
    device.wifi_calling_enabled = enabled
    device.wifi_calling_mms_over_wifi = mms_over_wifi


def remove_app_permission(
    state: DomainState, app_name: str, permission: Literal["sms", "storage", "phone", "network"]
) -> None:
    device = _parts(state)[1].device
    app = device.app_statuses.get(app_name.lower())
    if app is None:
        raise ValueError(f"app {app_name!r} is not installed")
    app.permissions = app.permissions.model_copy(update={permission: False})


def simulate_network_search(state: DomainState) -> None:
    network_search(_parts(state)[1])


def set_data_usage(state: DomainState, customer_id: str, line_id: str, data_used_gb: float) -> None:
    db, _ = _parts(state)
    if data_used_gb < 0:
        raise ValueError("data_used_gb must not be negative")
    _set_line(db, _owned_line_at(db, customer_id, line_id), data_used_gb=data_used_gb)


def suspend_line_for_overdue_bill(
    state: DomainState, customer_id: str, line_id: str, new_bill_id: str, contract_ended: bool
) -> None:
    """Bill last month's plan price as Overdue bill `new_bill_id` and suspend the line (contract ended, if asked)."""
    db, _ = _parts(state)
    li = _owned_line_at(db, customer_id, line_id)
    ci = _customer_at(db, customer_id)
    if _find(db.bills, lambda b: b.bill_id, new_bill_id) is not None:
        raise ValueError(f"bill {new_bill_id} already exists")
    line = db.lines[li]
    plan = _plan(db, line.plan_id)
    start = month_start(TODAY, -1)
    issue = month_end(start) + timedelta(days=1)
    bill = Bill(
        bill_id=new_bill_id,
        customer_id=customer_id,
        period_start=start,
        period_end=month_end(start),
        issue_date=issue,
        total_due=plan.price_per_month,
        due_date=issue + timedelta(days=14),
        line_items=[
            LineItem(
                description=f"{plan.name} - Line {line.phone_number}",
                amount=plan.price_per_month,
                date=issue,
                item_type="Plan Charge",
            )
        ],
        status="Overdue",
    )
    db.bills.append(bill)
    customer = db.customers[ci]
    db.customers[ci] = customer.model_copy(update={"bill_ids": [*customer.bill_ids, new_bill_id]})
    changes: dict[str, Any] = {"status": "Suspended", "suspension_start_date": TODAY}
    if contract_ended:
        changes["contract_end_date"] = start - timedelta(days=1)
    _set_line(db, li, **changes)


def _setup(fn: Callable[..., None]) -> Callable[..., None]:
    """A setup function whose arguments are checked against its signature (strictly, like tool arguments),
    followed by a sync, as tau2 syncs after every initialization action."""
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {
        p.name: (hints[p.name], ... if p.default is inspect.Parameter.empty else p.default)
        for p in list(inspect.signature(fn).parameters.values())[1:]
    }
    arguments_model = create_model(
        f"{fn.__name__}_setup_arguments", __config__=ConfigDict(strict=True, extra="forbid"), **fields
    )

    @functools.wraps(fn)
    def run(state: DomainState, **arguments: Any) -> None:
        parsed = arguments_model.model_validate(arguments)
        try:
            fn(state, **{name: getattr(parsed, name) for name in fields})
        except ToolError as exc:
            raise ValueError(str(exc)) from None
        sync(state)

    return run


_SETUP: list[Callable[..., None]] = [
    set_user_info,
    set_user_location,
    turn_airplane_mode_on,
    turn_airplane_mode_off,
    turn_data_on,
    turn_data_off,
    turn_roaming_on,
    turn_roaming_off,
    turn_data_saver_mode_on,
    turn_data_saver_mode_off,
    unseat_sim_card,
    lock_sim_card,
    break_apn_settings,
    break_apn_mms_setting,
    break_vpn,
    set_wifi_calling,
    remove_app_permission,
    simulate_network_search,
    set_data_usage,
    suspend_line_for_overdue_bill,
]
SETUP_FUNCTIONS: dict[str, Callable[..., None]] = {fn.__name__: _setup(fn) for fn in _SETUP}


# ------------------------------------------------------------------------------------------- assertions


def assert_data_refueling_amount(state: DomainState, customer_id: str, line_id: str, expected_amount: float) -> bool:
    db, _ = _parts(state)
    try:
        line = db.lines[_owned_line_at(db, customer_id, line_id)]
    except ToolError:
        return False
    return abs(line.data_refueling_gb - expected_amount) < 1e-6


def assert_line_status(state: DomainState, customer_id: str, line_id: str, expected_status: str) -> bool:
    db, _ = _parts(state)
    try:
        return db.lines[_owned_line_at(db, customer_id, line_id)].status == expected_status
    except ToolError:
        return False


def assert_overdue_bill_exists(state: DomainState, overdue_bill_id: str, customer_id: str | None = None) -> bool:
    db, _ = _parts(state)
    i = _find(db.bills, lambda b: b.bill_id, overdue_bill_id)
    if i is None:
        return False
    bill = db.bills[i]
    return bill.status == "Overdue" and (customer_id is None or bill.customer_id == customer_id)


def assert_no_overdue_bill(state: DomainState, overdue_bill_id: str) -> bool:
    """True when the bill no longer exists or has been paid."""
    db, _ = _parts(state)
    i = _find(db.bills, lambda b: b.bill_id, overdue_bill_id)
    return i is None or db.bills[i].status == "Paid"


def assert_service_status(state: DomainState, expected_status: NetworkStatus) -> bool:
    return _parts(state)[1].device.network_connection_status == expected_status


def assert_mobile_data_status(state: DomainState, expected_status: bool) -> bool:
    return mobile_data_working(_parts(state)[1]) == expected_status


def assert_internet_speed(state: DomainState, expected_speed: float, expected_desc: str | None = None) -> bool:
    mbps, label = speed(_parts(state)[1])
    if mbps is None or mbps < expected_speed:
        return False
    return expected_desc is None or label.lower() == expected_desc.lower()


def assert_internet_not_excellent(state: DomainState) -> bool:
    mbps, label = speed(_parts(state)[1])
    return mbps is None or label != "Excellent"


def assert_can_send_mms(state: DomainState, expected_status: bool) -> bool:
    return mms_working(_parts(state)[1]) == expected_status


def assert_airplane_mode_status(state: DomainState, expected_status: bool) -> bool:
    return _parts(state)[1].device.airplane_mode == expected_status


def assert_mobile_roaming_status(state: DomainState, expected_status: bool) -> bool:
    return _parts(state)[1].device.roaming_enabled == expected_status


def assert_mobile_data_saver_mode_status(state: DomainState, expected_status: bool) -> bool:
    return _parts(state)[1].device.data_saver_mode == expected_status


def assert_mobile_data_usage_exceeded(state: DomainState, expected_status: bool) -> bool:
    return _parts(state)[1].surroundings.mobile_data_usage_exceeded == expected_status


_ASSERTIONS: list[Callable[..., bool]] = [
    assert_data_refueling_amount,
    assert_line_status,
    assert_overdue_bill_exists,
    assert_no_overdue_bill,
    assert_service_status,
    assert_mobile_data_status,
    assert_internet_speed,
    assert_internet_not_excellent,
    assert_can_send_mms,
    assert_airplane_mode_status,
    assert_mobile_roaming_status,
    assert_mobile_data_saver_mode_status,
    assert_mobile_data_usage_exceeded,
]
ASSERTIONS: dict[str, Callable[..., bool]] = {fn.__name__: fn for fn in _ASSERTIONS}

AGENT_TOOLS: list[Any] = [
    get_customer_by_phone,
    get_customer_by_id,
    get_customer_by_name,
    get_details_by_id,
    get_bills_for_customer,
    get_data_usage,
    suspend_line,
    resume_line,
    send_payment_request,
    enable_roaming,
    disable_roaming,
    refuel_data,
    transfer_to_human_agents,
]
USER_TOOLS: list[Any] = [
    check_status_bar,
    check_network_status,
    check_network_mode_preference,
    run_speed_test,
    check_sim_status,
    check_data_restriction_status,
    check_apn_settings,
    check_wifi_status,
    check_wifi_calling_status,
    check_vpn_status,
    check_installed_apps,
    check_app_status,
    check_app_permissions,
    can_send_mms,
    check_payment_request,
    toggle_airplane_mode,
    set_network_mode_preference,
    reseat_sim_card,
    toggle_data,
    toggle_roaming,
    toggle_data_saver_mode,
    set_apn_settings,
    reset_apn_settings,
    toggle_wifi,
    toggle_wifi_calling,
    connect_vpn,
    disconnect_vpn,
    grant_app_permission,
    reboot_device,
    make_payment,
]
TOOLS: list[Any] = AGENT_TOOLS + USER_TOOLS
