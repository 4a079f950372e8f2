"""The telecom world: the company's records (agent side) and the customer's phone and surroundings (user side).

Field names and enum values follow tau2-bench's telecom domain, so its `db.toml` / `user_db.toml` validate
against these models unchanged. `generate_state(seed)` builds a larger, seeded company of its own.
"""

from __future__ import annotations

import calendar
import random
from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eigenloop.domains.base import DomainState

# The domain's fixed clock (tau2 uses the same one): every "today" in tools, setup and generation.
TODAY = date(2025, 2, 25)
NOW = datetime(2025, 2, 25, 12, 8)


class _Model(BaseModel):
    # Unknown fields are errors: a typo in a data file or a patch is reported, not silently dropped.
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- agent DB

AccountStatus = Literal["Active", "Suspended", "Pending Verification", "Closed"]
LineStatus = Literal["Active", "Suspended", "Pending Activation", "Closed"]
BillStatus = Literal["Draft", "Issued", "Awaiting Payment", "Paid", "Overdue", "Disputed"]
PaymentMethodType = Literal["Credit Card", "Debit Card", "PayPal"]
DeviceType = Literal["phone", "router", "tablet", "watch", "other"]
LineItemType = Literal["Plan Charge", "Overage", "Fee", "Charge", "Credit"]


class Plan(_Model):
    plan_id: str
    name: str
    data_limit_gb: float
    price_per_month: float
    data_refueling_price_per_gb: float


class Address(_Model):
    street: str
    city: str
    state: str
    zip_code: str


class PaymentMethod(_Model):
    method_type: PaymentMethodType
    account_number_last_4: str
    expiration_date: str  # MM/YYYY


class Customer(_Model):
    customer_id: str
    full_name: str
    date_of_birth: date
    email: str
    phone_number: str
    address: Address
    account_status: AccountStatus
    payment_methods: list[PaymentMethod] = Field(default_factory=list)
    line_ids: list[str] = Field(default_factory=list)
    bill_ids: list[str] = Field(default_factory=list)
    created_at: datetime
    last_extension_date: date | None = None
    goodwill_credit_used_this_year: float = 0.0


class Line(_Model):
    line_id: str
    phone_number: str
    status: LineStatus
    plan_id: str
    device_id: str | None = None
    data_used_gb: float = 0.0
    data_refueling_gb: float = 0.0
    roaming_enabled: bool = False
    contract_end_date: date | None = None
    last_plan_change_date: date | None = None
    last_sim_replacement_date: date | None = None
    suspension_start_date: date | None = None


class LineItem(_Model):
    description: str
    amount: float
    date: date
    item_type: LineItemType


class Bill(_Model):
    bill_id: str
    customer_id: str
    period_start: date
    period_end: date
    issue_date: date
    total_due: float
    due_date: date
    line_items: list[LineItem] = Field(default_factory=list)
    status: BillStatus


class Device(_Model):
    device_id: str
    device_type: DeviceType
    model: str
    imei: str | None = None
    is_esim_capable: bool
    activated: bool
    activation_date: datetime | None = None
    last_esim_transfer_date: datetime | None = None


class TelecomDB(_Model):
    """The company's records. Lists, as in tau2's db.toml; tools reach entities by id lookup."""

    plans: list[Plan] = Field(default_factory=list)
    customers: list[Customer] = Field(default_factory=list)
    lines: list[Line] = Field(default_factory=list)
    bills: list[Bill] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)


# ----------------------------------------------------------------------------------------- user device DB

SimStatus = Literal["active", "missing", "locked_pin", "locked_puk"]
SignalStrength = Literal["none", "poor", "fair", "good", "excellent"]
NetworkTechnology = Literal["none", "2G", "3G", "4G", "5G"]
RadioTechnology = Literal["2G", "3G", "4G", "5G"]
NetworkStatus = Literal["connected", "searching", "no_service", "emergency_only"]
NetworkModePreference = Literal["4g_5g_preferred", "4g_only", "3g_only", "2g_only"]
PerformanceLevel = Literal["unknown", "poor", "fair", "good", "excellent"]

NETWORK_MODES: tuple[NetworkModePreference, ...] = ("4g_5g_preferred", "4g_only", "3g_only", "2g_only")
DEFAULT_MMSC_URL = "http://mms.carrier.com/mms/wapenc"


class APNSettings(_Model):
    apn_name: str = Field(default="internet", max_length=64)  # "internet" works, "broken" loses service
    reset_at_reboot: bool = False
    mms_apn: str | None = Field(default="mms", max_length=64)
    mmsc_url: str | None = Field(default=DEFAULT_MMSC_URL, max_length=256)
    mms_proxy: str | None = Field(default=None, max_length=256)
    mms_port: int | None = Field(default=None, ge=0, le=65535)


class VpnDetails(_Model):
    server_address: str
    protocol: str
    server_performance: PerformanceLevel = "unknown"


class AppPermissions(_Model):
    sms: bool = False
    storage: bool = False
    phone: bool = False
    network: bool = False


class AppStatus(_Model):
    app_name: str
    permissions: AppPermissions = Field(default_factory=AppPermissions)


def default_apps() -> dict[str, AppStatus]:
    return {
        "messaging": AppStatus(app_name="messaging", permissions=AppPermissions(sms=True, storage=True, phone=True)),
        "browser": AppStatus(app_name="browser", permissions=AppPermissions(network=True, storage=True)),
    }


class PhoneDevice(_Model):
    """The customer's simulated phone: what the user-side tools read and change."""

    sim_card_status: SimStatus = "active"
    sim_card_missing: bool = False
    airplane_mode: bool = False
    # What a network search finds with the default preference and surroundings: 5G at excellent signal.
    network_signal_strength: SignalStrength = "excellent"
    network_technology_connected: NetworkTechnology = "5G"
    network_connection_status: NetworkStatus = "connected"
    battery_level: int = 80
    data_enabled: bool = True
    roaming_enabled: bool = False
    network_mode_preference: NetworkModePreference = "4g_5g_preferred"
    active_apn_settings: APNSettings = Field(default_factory=APNSettings)
    wifi_enabled: bool = False
    wifi_connected: bool = False
    wifi_ssid: str | None = None
    wifi_signal_strength: SignalStrength = "none"
    wifi_calling_enabled: bool = False
    wifi_calling_mms_over_wifi: bool = False
    data_saver_mode: bool = False
    vpn_enabled_setting: bool = False
    vpn_connected: bool = False
    vpn_details: VpnDetails | None = None
    app_statuses: dict[str, AppStatus] = Field(default_factory=default_apps)


def default_signal() -> dict[RadioTechnology, SignalStrength]:
    return {"2G": "poor", "3G": "fair", "4G": "good", "5G": "excellent"}


class PaymentRequest(_Model):
    bill_id: str
    amount_due: float
    paid: bool = False


class Surroundings(_Model):
    """The user's world: who and where they are, and what the network around them offers (kept in sync)."""

    name: str | None = None
    phone_number: str | None = None
    is_abroad: bool = False
    roaming_allowed: bool = False
    signal_strength: dict[RadioTechnology, SignalStrength] = Field(default_factory=default_signal)
    mobile_data_usage_exceeded: bool = False
    line_active: bool = True
    payment_request: PaymentRequest | None = None


class TelecomUserDB(_Model):
    device: PhoneDevice = Field(default_factory=PhoneDevice)
    surroundings: Surroundings = Field(default_factory=Surroundings)


# ---------------------------------------------------------------------------------------------- generator

PLANS = [
    Plan(plan_id="P1001", name="Starter", data_limit_gb=3.0, price_per_month=30.0, data_refueling_price_per_gb=6.0),
    Plan(plan_id="P1002", name="Basic", data_limit_gb=5.0, price_per_month=40.0, data_refueling_price_per_gb=5.0),
    Plan(plan_id="P1003", name="Plus", data_limit_gb=10.0, price_per_month=55.0, data_refueling_price_per_gb=3.0),
    Plan(plan_id="P1004", name="Premium", data_limit_gb=20.0, price_per_month=70.0, data_refueling_price_per_gb=2.0),
    Plan(
        plan_id="P1005", name="Family Share", data_limit_gb=30.0, price_per_month=120.0, data_refueling_price_per_gb=3.0
    ),
    Plan(
        plan_id="P1006",
        name="Unlimited Max",
        data_limit_gb=999.0,
        price_per_month=90.0,
        data_refueling_price_per_gb=0.5,
    ),
    Plan(
        plan_id="P1007",
        name="Connected Devices",
        data_limit_gb=1.0,
        price_per_month=15.0,
        data_refueling_price_per_gb=8.0,
    ),
]

FIRST = [
    "Amara",
    "Bruno",
    "Chloe",
    "Darius",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Keiko",
    "Luca",
    "Maya",
    "Nikolai",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Samir",
    "Tessa",
    "Umar",
    "Vera",
    "Wes",
    "Yara",
    "Zane",
]
LAST = [
    "Abbott",
    "Bianchi",
    "Chen",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreno",
    "Nakamura",
    "Okoro",
    "Petrov",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Varga",
]
STREETS = ["Main St", "Oak Ave", "Pine St", "River Rd", "Maple Dr", "Cedar Ln", "Lake Blvd", "Hill Ct", "Park Way"]
CITIES = [
    ("Anytown", "CA", "90"),
    ("Springfield", "IL", "62"),
    ("Denver", "CO", "80"),
    ("Austin", "TX", "73"),
    ("Portland", "OR", "97"),
    ("Madison", "WI", "53"),
    ("Raleigh", "NC", "27"),
    ("Tucson", "AZ", "85"),
]
PHONE_MODELS = ["Pixel 8", "Galaxy S24", "iPhone 15", "OnePlus 12", "Moto G Power", "Xperia 10", "Nokia G42"]
OTHER_DEVICES: list[tuple[DeviceType, str]] = [
    ("tablet", "Tab Pro 11"),
    ("watch", "Watch LTE 5"),
    ("router", "HomeSpot 5G"),
    ("tablet", "iPad Air"),
]


def month_start(day: date, months: int = 0) -> date:
    """The first day of the month `months` after `day`'s month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def month_end(day: date) -> date:
    return date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])


def _random_date(rng: random.Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randint(0, (end - start).days))


def generate_db(seed: int = 0, n_customers: int = 300) -> TelecomDB:
    """A seeded company: `n_customers` customers with 0-4 lines each, their devices, and three months of bills.

    Every status is represented (suspended lines with an overdue bill or an ended contract, pending
    activations, disputed and awaiting-payment bills, lines over their data allowance, roaming on and off).
    """
    rng = random.Random(seed)
    plans = [p.model_copy() for p in PLANS]
    plan_by_id = {p.plan_id: p for p in plans}
    customers: list[Customer] = []
    lines: list[Line] = []
    bills: list[Bill] = []
    devices: list[Device] = []
    used_numbers: set[str] = set()

    def phone_number() -> str:
        while True:
            number = f"555-{rng.randint(200, 989)}-{rng.randint(1000, 9999)}"
            if number not in used_numbers:
                used_numbers.add(number)
                return number

    for c in range(n_customers):
        customer_id = f"C{1001 + c}"
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, state, zip_prefix = rng.choice(CITIES)
        roll = rng.random()
        account_status: AccountStatus = (
            "Active"
            if roll < 0.86
            else "Suspended"
            if roll < 0.93
            else "Pending Verification"
            if roll < 0.97
            else "Closed"
        )
        methods = [
            PaymentMethod(
                method_type=rng.choice(["Credit Card", "Debit Card", "PayPal"]),
                account_number_last_4=f"{rng.randint(0, 9999):04d}",
                expiration_date=f"{rng.randint(1, 12):02d}/{rng.randint(2025, 2029)}",
            )
            for _ in range(0 if account_status == "Pending Verification" else rng.choice([1, 1, 1, 2, 2, 3]))
        ]
        n_lines = 0 if account_status == "Pending Verification" else rng.choice([1, 1, 1, 2, 2, 3, 4])
        line_ids: list[str] = []
        for _ in range(n_lines):
            line_id = f"L{10001 + len(lines)}"
            device_id = f"D{10001 + len(devices)}"
            if rng.random() < 0.85:
                device_type: DeviceType = "phone"
                model = rng.choice(PHONE_MODELS)
            else:
                device_type, model = rng.choice(OTHER_DEVICES)
            activated_on = datetime.combine(_random_date(rng, date(2022, 1, 1), date(2025, 2, 20)), datetime.min.time())
            activated_on += timedelta(hours=rng.randint(8, 19), minutes=rng.choice([0, 15, 30, 45]))
            devices.append(
                Device(
                    device_id=device_id,
                    device_type=device_type,
                    model=model,
                    imei=f"{rng.randint(10**14, 10**15 - 1)}" if device_type in ("phone", "tablet", "watch") else None,
                    is_esim_capable=rng.random() < 0.8,
                    activated=True,
                    activation_date=activated_on,
                    last_esim_transfer_date=(
                        activated_on + timedelta(days=rng.randint(1, 200)) if rng.random() < 0.1 else None
                    ),
                )
            )
            plan = plan_by_id["P1007"] if device_type in ("watch", "router") else rng.choice(plans[:6])
            if account_status == "Closed":
                status: LineStatus = "Closed"
            elif account_status == "Suspended":
                status = "Suspended"
            else:
                roll = rng.random()
                status = "Active" if roll < 0.88 else "Suspended" if roll < 0.95 else "Pending Activation"
            contract_end = _random_date(rng, date(2024, 6, 1), date(2027, 12, 31))
            if status == "Active" and contract_end < TODAY:
                contract_end = _random_date(rng, date(2025, 6, 1), date(2027, 12, 31))
            used = 0.0
            if status == "Active":
                cap = min(plan.data_limit_gb, 60.0)
                used = round(rng.uniform(0.0, cap * (1.15 if rng.random() < 0.15 else 0.95)), 1)
            lines.append(
                Line(
                    line_id=line_id,
                    phone_number=phone_number(),
                    status=status,
                    plan_id=plan.plan_id,
                    device_id=device_id,
                    data_used_gb=used,
                    data_refueling_gb=rng.choice([0.0] * 9 + [1.0, 2.0]) if status == "Active" else 0.0,
                    roaming_enabled=rng.random() < 0.5,
                    contract_end_date=contract_end,
                    last_plan_change_date=_random_date(rng, date(2023, 1, 1), date(2025, 2, 1)),
                    last_sim_replacement_date=(
                        _random_date(rng, date(2023, 1, 1), date(2025, 2, 1)) if rng.random() < 0.3 else None
                    ),
                    suspension_start_date=(
                        _random_date(rng, date(2025, 1, 1), date(2025, 2, 24)) if status == "Suspended" else None
                    ),
                )
            )
            line_ids.append(line_id)

        bill_ids: list[str] = []
        customer_lines = lines[len(lines) - n_lines :]
        if customer_lines:
            suspended = any(line.status == "Suspended" for line in customer_lines)
            for months_back in (2, 1, 0, -1):
                period_start = month_start(TODAY, -months_back)
                issue = period_start + timedelta(days=4)
                bill_id = f"B{100001 + len(bills)}"
                if months_back == -1:
                    bill_status: BillStatus = "Draft"
                    items: list[LineItem] = []
                else:
                    items = [
                        LineItem(
                            description=f"{plan_by_id[line.plan_id].name} - Line {line.phone_number}",
                            amount=plan_by_id[line.plan_id].price_per_month,
                            date=issue,
                            item_type="Plan Charge",
                        )
                        for line in customer_lines
                        if line.status != "Closed"
                    ]
                    if rng.random() < 0.15:
                        items.append(
                            LineItem(
                                description=f"Data Overage - Line {customer_lines[0].phone_number}",
                                amount=round(rng.uniform(5, 30), 2),
                                date=issue,
                                item_type="Overage",
                            )
                        )
                    if suspended:
                        items.append(LineItem(description="Suspension Fee", amount=5.0, date=issue, item_type="Fee"))
                    if rng.random() < 0.05:
                        items.append(
                            LineItem(description="Goodwill credit", amount=-10.0, date=issue, item_type="Credit")
                        )
                    if months_back == 2:
                        bill_status = "Paid"
                    elif months_back == 1:
                        bill_status = "Overdue" if suspended and rng.random() < 0.6 else "Paid"
                    else:
                        roll = rng.random()
                        bill_status = (
                            "Overdue"
                            if suspended
                            else "Issued"
                            if roll < 0.7
                            else "Paid"
                            if roll < 0.9
                            else "Disputed"
                            if roll < 0.96
                            else "Awaiting Payment"
                        )
                bills.append(
                    Bill(
                        bill_id=bill_id,
                        customer_id=customer_id,
                        period_start=period_start,
                        period_end=month_end(period_start),
                        issue_date=period_start if months_back == -1 else issue,
                        total_due=round(sum(i.amount for i in items), 2),
                        due_date=issue + timedelta(days=14),
                        line_items=items,
                        status=bill_status,
                    )
                )
                bill_ids.append(bill_id)

        dob = _random_date(rng, date(1950, 1, 1), date(2004, 12, 31))
        customers.append(
            Customer(
                customer_id=customer_id,
                full_name=f"{first} {last}",
                date_of_birth=dob,
                email=f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@example.com",
                phone_number=phone_number(),
                address=Address(
                    street=f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
                    city=city,
                    state=state,
                    zip_code=f"{zip_prefix}{rng.randint(100, 999)}",
                ),
                account_status=account_status,
                payment_methods=methods,
                line_ids=line_ids,
                bill_ids=bill_ids,
                created_at=datetime.combine(_random_date(rng, date(2019, 1, 1), date(2025, 1, 31)), datetime.min.time())
                + timedelta(hours=rng.randint(8, 19), minutes=rng.randint(0, 59)),
                last_extension_date=_random_date(rng, date(2024, 6, 1), date(2025, 2, 1))
                if rng.random() < 0.1
                else None,
                goodwill_credit_used_this_year=rng.choice([0.0, 0.0, 0.0, 10.0, 25.0, 50.0]),
            )
        )
    return TelecomDB(plans=plans, customers=customers, lines=lines, bills=bills, devices=devices)


def generate_state(seed: int = 0, n_customers: int = 300) -> DomainState:
    """The seeded company plus a phone that belongs to nobody yet (a task's `set_user_info` picks the line)."""
    return DomainState(db=generate_db(seed, n_customers), user=TelecomUserDB())
