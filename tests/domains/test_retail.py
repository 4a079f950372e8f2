"""The retail domain: tools (effects, error messages, no change on refusal), generator, samplers, tau2 data."""

from __future__ import annotations

import copy
import json
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import DomainState, Side, ToolKind
from eigenloop.domains.retail import DOMAIN
from eigenloop.domains.retail.db import OPTIONAL_ORDER_FIELDS, GiftCard, RetailDB, generate_db
from eigenloop.domains.retail.tau2 import load_tau2_state
from eigenloop.env.session import execute
from eigenloop.protocol import tool_call

TAU2_DIR = Path(__file__).resolve().parents[3] / "shared" / "tau2" / "data" / "retail"

# --------------------------------------------------------------------------------------------- a tiny store

LAMP, MUG = "1000000001", "1000000002"
RED, BLUE, GREEN = "2000000001", "2000000002", "2000000003"  # lamp variants; green is unavailable
SMALL, LARGE = "2000000011", "2000000012"  # mug variants
ADA, BEN = "ada_ng_1001", "ben_ito_1002"
CARD, PAYPAL, GIFT, GIFT_LOW, BEN_GIFT = (
    "credit_card_1111111",
    "paypal_2222222",
    "gift_card_3333333",
    "gift_card_5555555",
    "gift_card_4444444",
)
PENDING, DELIVERED, PROCESSED, CANCELLED, PENDING_GIFT, BEN_PENDING = (
    "#W0000001",
    "#W0000002",
    "#W0000003",
    "#W0000004",
    "#W0000005",
    "#W0000006",
)
PRICES = {RED: 10.1, BLUE: 12.3, GREEN: 9.0, SMALL: 5.0, LARGE: 7.25}
OPTIONS = {
    RED: {"color": "red"},
    BLUE: {"color": "blue"},
    GREEN: {"color": "green"},
    SMALL: {"size": "small"},
    LARGE: {"size": "large"},
}


def _address(zip_code: str) -> dict[str, str]:
    return {
        "address1": "1 Main St",
        "address2": "Apt 2",
        "city": "Springfield",
        "country": "USA",
        "state": "IL",
        "zip": zip_code,
    }


def _item(item_id: str) -> dict[str, Any]:
    product_id, name = (LAMP, "Lamp") if item_id in (RED, BLUE, GREEN) else (MUG, "Mug")
    return {
        "name": name,
        "product_id": product_id,
        "item_id": item_id,
        "price": PRICES[item_id],
        "options": OPTIONS[item_id],
    }


def _order(order_id: str, user_id: str, status: str, item_ids: list[str], payer: str) -> dict[str, Any]:
    total = round(sum(PRICES[i] for i in item_ids), 2)
    history = [{"transaction_type": "payment", "amount": total, "payment_method_id": payer}]
    if status == "cancelled":
        history.append({"transaction_type": "refund", "amount": total, "payment_method_id": payer})
    fulfillments = [] if status == "pending" else [{"tracking_id": ["123456789012"], "item_ids": item_ids}]
    return {
        "order_id": order_id,
        "user_id": user_id,
        "address": _address("10001"),
        "items": [_item(i) for i in item_ids],
        "status": status,
        "fulfillments": fulfillments,
        "payment_history": history,
    }


TINY: dict[str, Any] = {
    "products": {
        LAMP: {
            "name": "Lamp",
            "product_id": LAMP,
            "variants": {
                i: {"item_id": i, "options": OPTIONS[i], "available": i != GREEN, "price": PRICES[i]}
                for i in (RED, BLUE, GREEN)
            },
        },
        MUG: {
            "name": "Mug",
            "product_id": MUG,
            "variants": {
                i: {"item_id": i, "options": OPTIONS[i], "available": True, "price": PRICES[i]} for i in (SMALL, LARGE)
            },
        },
    },
    "users": {
        ADA: {
            "user_id": ADA,
            "name": {"first_name": "Ada", "last_name": "Ng"},
            "address": _address("10001"),
            "email": "Ada.Ng@example.com",
            "payment_methods": {
                CARD: {"source": "credit_card", "id": CARD, "brand": "visa", "last_four": "4242"},
                PAYPAL: {"source": "paypal", "id": PAYPAL},
                GIFT: {"source": "gift_card", "id": GIFT, "balance": 20.0},
                GIFT_LOW: {"source": "gift_card", "id": GIFT_LOW, "balance": 1.0},
            },
            "orders": [PENDING, DELIVERED, PROCESSED, CANCELLED, PENDING_GIFT],
        },
        BEN: {
            "user_id": BEN,
            "name": {"first_name": "Ben", "last_name": "Ito"},
            "address": _address("20002"),
            "email": "ben.ito@example.com",
            "payment_methods": {BEN_GIFT: {"source": "gift_card", "id": BEN_GIFT, "balance": 100.0}},
            "orders": [BEN_PENDING],
        },
    },
    "orders": {
        PENDING: _order(PENDING, ADA, "pending", [RED, SMALL, BLUE], CARD),
        DELIVERED: _order(DELIVERED, ADA, "delivered", [RED, RED, SMALL], GIFT),
        PROCESSED: _order(PROCESSED, ADA, "processed", [LARGE], PAYPAL),
        CANCELLED: _order(CANCELLED, ADA, "cancelled", [BLUE], CARD),
        PENDING_GIFT: _order(PENDING_GIFT, ADA, "pending", [SMALL], GIFT),
        BEN_PENDING: _order(BEN_PENDING, BEN, "pending", [BLUE], BEN_GIFT),
    },
}
TINY_DB = RetailDB.model_validate(TINY)


def tiny() -> DomainState:
    return DomainState(TINY_DB.model_copy(deep=True))


def db_of(state: DomainState) -> RetailDB:
    assert isinstance(state.db, RetailDB)
    return state.db


def run(state: DomainState, name: str, /, **arguments: Any) -> pb.ToolResult:
    result, _ = execute(DOMAIN, state, tool_call(name, arguments))
    return result


def ok(state: DomainState, name: str, /, **arguments: Any) -> Any:
    result = run(state, name, **arguments)
    assert not result.error, result.content
    try:
        return json.loads(result.content)
    except json.JSONDecodeError:
        return result.content


def refused(state: DomainState, name: str, message: str, /, **arguments: Any) -> None:
    """The call fails with exactly tau2's message and changes nothing."""
    before = state.hash()
    result = run(state, name, **arguments)
    assert result.error, f"{name} should have failed with {message!r}"
    assert result.error_kind == pb.TOOL_ERROR_KIND_TOOL_FAILED
    assert result.content == f"Error: {message}"
    assert state.hash() == before


def balance(state: DomainState, user_id: str, method_id: str) -> float:
    method = db_of(state).users[user_id].payment_methods[method_id]
    assert isinstance(method, GiftCard)
    return method.balance


def history(state: DomainState, order_id: str) -> list[tuple[str, float, str]]:
    return [(h.transaction_type, h.amount, h.payment_method_id) for h in db_of(state).orders[order_id].payment_history]


def address_args(zip_code: str) -> dict[str, str]:
    return {
        "address1": "9 New Rd",
        "address2": "",
        "city": "Lakeside",
        "state": "WA",
        "country": "USA",
        "zip": zip_code,
    }


# --------------------------------------------------------------------------------------------------- the domain

WRITES = {
    "cancel_pending_order",
    "modify_pending_order_address",
    "modify_pending_order_payment",
    "modify_pending_order_items",
    "exchange_delivered_order_items",
    "return_delivered_order_items",
    "modify_user_address",
}
READS = {
    "find_user_id_by_email",
    "find_user_id_by_name_zip",
    "get_user_details",
    "get_order_details",
    "get_product_details",
    "get_item_details",
    "list_all_product_types",
}
GENERIC = {"calculate", "transfer_to_human_agents"}


def test_domain_has_tau2s_sixteen_agent_tools() -> None:
    kinds = {t.name: t.kind for t in DOMAIN.tools}
    assert set(kinds) == WRITES | READS | GENERIC
    assert {n for n, k in kinds.items() if k is ToolKind.WRITE} == WRITES
    assert {n for n, k in kinds.items() if k is ToolKind.READ} == READS
    assert {n for n, k in kinds.items() if k is ToolKind.GENERIC} == GENERIC
    assert DOMAIN.user_tools == [] and len(DOMAIN.agent_tools) == 16
    assert DOMAIN.name == "retail" and "pending" in DOMAIN.policy and DOMAIN.from_tau2 is load_tau2_state
    assert DOMAIN.initial_state(0).user is None
    for t in DOMAIN.tools:
        assert t.description, t.name
        assert t.json_schema["type"] == "object"


def test_schemas_use_tau2_argument_names() -> None:
    schema = DOMAIN.tool("modify_pending_order_address").json_schema  # type: ignore[union-attr]
    assert list(schema["properties"]) == ["order_id", "address1", "address2", "city", "state", "country", "zip"]
    assert DOMAIN.tool("modify_user_address").json_schema["required"] == [  # type: ignore[union-attr]
        "user_id",
        "address1",
        "address2",
        "city",
        "state",
        "country",
        "zip",
    ]
    reason = DOMAIN.tool("cancel_pending_order").json_schema["properties"]["reason"]  # type: ignore[union-attr]
    assert reason["enum"] == ["no longer needed", "ordered by mistake"]
    items = DOMAIN.tool("modify_pending_order_items").json_schema["properties"]  # type: ignore[union-attr]
    assert items["item_ids"]["type"] == "array" and items["item_ids"]["items"]["type"] == "string"


# -------------------------------------------------------------------------------------------------- read tools


def test_find_user_by_email_is_case_insensitive() -> None:
    state = tiny()
    assert run(state, "find_user_id_by_email", email="ada.ng@EXAMPLE.com").content == ADA  # a bare string
    refused(state, "find_user_id_by_email", "User not found", email="nobody@example.com")


def test_find_user_by_name_zip() -> None:
    state = tiny()
    assert ok(state, "find_user_id_by_name_zip", first_name="ADA", last_name="ng", zip="10001") == ADA
    refused(state, "find_user_id_by_name_zip", "User not found", first_name="Ada", last_name="Ng", zip="20002")


def test_get_details() -> None:
    state = tiny()
    assert ok(state, "get_user_details", user_id=ADA) == TINY["users"][ADA]
    order = ok(state, "get_order_details", order_id=PENDING)
    assert order["items"] == TINY["orders"][PENDING]["items"] and order["cancel_reason"] is None
    assert ok(state, "get_product_details", product_id=LAMP) == TINY["products"][LAMP]
    assert ok(state, "get_item_details", item_id=BLUE) == TINY["products"][LAMP]["variants"][BLUE]
    refused(state, "get_user_details", "User not found", user_id="nobody")
    refused(state, "get_order_details", "Order not found", order_id="W0000001")  # the '#' is part of the id
    refused(state, "get_product_details", "Product not found", product_id=RED)  # an item id is not a product id
    refused(state, "get_item_details", "Item not found", item_id=LAMP)


def test_list_all_product_types_is_a_sorted_json_string() -> None:
    content = run(tiny(), "list_all_product_types").content
    assert content == json.dumps({"Lamp": LAMP, "Mug": MUG}, sort_keys=True)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 * (3.5 + 1)", "9.0"),
        ("1 + 2", "3"),
        ("10 / 3", "3.33"),
        ("-(4 - 6) * .5", "1.0"),
        ("1000 - 981.57", "18.43"),
    ],
)
def test_calculate(expression: str, value: str) -> None:
    assert run(tiny(), "calculate", expression=expression).content == value


@pytest.mark.parametrize("expression", ["2 ** 10", "1 // 2", "(1", "", "1 / 0", "2 (3)"])
def test_calculate_rejects_what_it_cannot_evaluate(expression: str) -> None:
    result = run(tiny(), "calculate", expression=expression)
    assert result.error and result.error_kind == pb.TOOL_ERROR_KIND_TOOL_FAILED


def test_calculate_allows_only_arithmetic_characters() -> None:
    refused(tiny(), "calculate", "Invalid characters in expression", expression="__import__('os')")


def test_transfer_to_human_agents() -> None:
    state = tiny()
    before = state.hash()
    assert run(state, "transfer_to_human_agents", summary="wants a refund in cash").content == "Transfer successful"
    assert state.hash() == before


# ------------------------------------------------------------------------------------------------------- cancel


def test_cancel_refunds_every_payment_and_credits_gift_cards_at_once() -> None:
    state = tiny()
    order = ok(state, "cancel_pending_order", order_id=PENDING, reason="ordered by mistake")
    assert order["status"] == "cancelled" and order["cancel_reason"] == "ordered by mistake"
    assert history(state, PENDING) == [("payment", 27.4, CARD), ("refund", 27.4, CARD)]
    assert balance(state, ADA, GIFT) == 20.0  # a credit card has no balance: only the history changes
    ok(state, "cancel_pending_order", order_id=PENDING_GIFT, reason="no longer needed")
    assert balance(state, ADA, GIFT) == 25.0
    assert db_of(state).orders[PENDING].fulfillments == []


def test_cancel_after_a_payment_change_refunds_the_whole_history() -> None:
    state = tiny()
    ok(state, "modify_pending_order_payment", order_id=PENDING_GIFT, payment_method_id=PAYPAL)
    assert balance(state, ADA, GIFT) == 25.0
    ok(state, "cancel_pending_order", order_id=PENDING_GIFT, reason="no longer needed")
    # tau2's behaviour: refunds for payment old, payment new and refund old, so the old gift card gains 3 x 5.0.
    assert history(state, PENDING_GIFT)[3:] == [("refund", 5.0, GIFT), ("refund", 5.0, PAYPAL), ("refund", 5.0, GIFT)]
    assert balance(state, ADA, GIFT) == 35.0


def test_cancel_refusals() -> None:
    state = tiny()
    refused(state, "cancel_pending_order", "Order not found", order_id="#W9999999", reason="no longer needed")
    for order_id in (DELIVERED, PROCESSED, CANCELLED):
        refused(
            state,
            "cancel_pending_order",
            "Non-pending order cannot be cancelled",
            order_id=order_id,
            reason="no longer needed",
        )
    # the status is checked before the reason, as in tau2
    refused(
        state, "cancel_pending_order", "Non-pending order cannot be cancelled", order_id=DELIVERED, reason="too slow"
    )
    refused(state, "cancel_pending_order", "Invalid reason", order_id=PENDING, reason="found it cheaper")
    ok(
        state,
        "modify_pending_order_items",
        order_id=PENDING,
        item_ids=[RED],
        new_item_ids=[BLUE],
        payment_method_id=CARD,
    )
    refused(
        state,
        "cancel_pending_order",
        "Non-pending order cannot be cancelled",
        order_id=PENDING,
        reason="no longer needed",
    )


# ------------------------------------------------------------------------------------------------ modify address


def test_modify_pending_order_address() -> None:
    state = tiny()
    order = ok(state, "modify_pending_order_address", order_id=PENDING, **address_args("98001"))
    assert order["address"] == {**address_args("98001"), "country": "USA"}
    assert db_of(state).users[ADA].address.zip == "10001"  # the user's default address is not changed
    ok(
        state,
        "modify_pending_order_items",
        order_id=PENDING_GIFT,
        item_ids=[SMALL],
        new_item_ids=[LARGE],
        payment_method_id=CARD,
    )
    ok(state, "modify_pending_order_address", order_id=PENDING_GIFT, **address_args("98002"))  # 'pending (...)'
    refused(
        state,
        "modify_pending_order_address",
        "Non-pending order cannot be modified",
        order_id=DELIVERED,
        **address_args("98003"),
    )
    refused(state, "modify_pending_order_address", "Order not found", order_id="#W1", **address_args("98003"))


def test_modify_user_address_moves_name_zip_lookup() -> None:
    state = tiny()
    user = ok(state, "modify_user_address", user_id=ADA, **address_args("99999"))
    assert user["address"]["zip"] == "99999" and user["address"]["state"] == "WA"
    assert ok(state, "find_user_id_by_name_zip", first_name="Ada", last_name="Ng", zip="99999") == ADA
    refused(state, "find_user_id_by_name_zip", "User not found", first_name="Ada", last_name="Ng", zip="10001")
    assert db_of(state).orders[PENDING].address.zip == "10001"  # orders keep their address
    refused(state, "modify_user_address", "User not found", user_id="nobody", **address_args("1"))


# ------------------------------------------------------------------------------------------------ modify payment


def test_modify_payment_pays_with_the_new_method_and_refunds_the_old() -> None:
    state = tiny()
    ok(state, "modify_pending_order_payment", order_id=PENDING_GIFT, payment_method_id=CARD)
    assert history(state, PENDING_GIFT) == [("payment", 5.0, GIFT), ("payment", 5.0, CARD), ("refund", 5.0, GIFT)]
    assert balance(state, ADA, GIFT) == 25.0
    assert db_of(state).orders[PENDING_GIFT].status == "pending"


def test_modify_payment_to_a_gift_card_debits_it() -> None:
    state = tiny()
    db_of(state).orders[PENDING_GIFT].payment_history[0].payment_method_id = CARD
    ok(state, "modify_pending_order_payment", order_id=PENDING_GIFT, payment_method_id=GIFT)
    assert balance(state, ADA, GIFT) == 15.0


def test_modify_payment_refusals() -> None:
    state = tiny()
    refused(
        state,
        "modify_pending_order_payment",
        "Non-pending order cannot be modified",
        order_id=PROCESSED,
        payment_method_id=CARD,
    )
    refused(
        state, "modify_pending_order_payment", "Payment method not found", order_id=PENDING, payment_method_id=BEN_GIFT
    )
    refused(
        state,
        "modify_pending_order_payment",
        "The new payment method should be different from the current one",
        order_id=PENDING,
        payment_method_id=CARD,
    )
    refused(
        state,
        "modify_pending_order_payment",
        "Insufficient gift card balance to pay for the order",
        order_id=PENDING,
        payment_method_id=GIFT,
    )  # 27.4 > 20.0
    ok(state, "modify_pending_order_payment", order_id=PENDING, payment_method_id=PAYPAL)
    refused(
        state,
        "modify_pending_order_payment",
        "There should be exactly one payment for a pending order",
        order_id=PENDING,
        payment_method_id=CARD,
    )
    ok(
        state,
        "modify_pending_order_items",
        order_id=PENDING_GIFT,
        item_ids=[SMALL],
        new_item_ids=[LARGE],
        payment_method_id=GIFT,
    )
    refused(
        state,
        "modify_pending_order_payment",
        "There should be exactly one payment for a pending order",
        order_id=PENDING_GIFT,
        payment_method_id=CARD,
    )  # 'pending (item modified)' passes the status check


# -------------------------------------------------------------------------------------------------- modify items


def test_modify_items_charges_the_unrounded_difference() -> None:
    state = tiny()
    order = ok(
        state,
        "modify_pending_order_items",
        order_id=PENDING,
        item_ids=[RED],
        new_item_ids=[BLUE],
        payment_method_id=PAYPAL,
    )
    diff = 12.3 - 10.1
    assert diff != 2.2  # float noise is kept, as tau2 does
    assert history(state, PENDING)[-1] == ("payment", diff, PAYPAL)
    assert order["status"] == "pending (item modified)"
    assert [i["item_id"] for i in order["items"]] == [BLUE, SMALL, BLUE]
    assert order["items"][0] == _item(BLUE)
    refused(
        state,
        "modify_pending_order_items",
        "Non-pending order cannot be modified",
        order_id=PENDING,
        item_ids=[SMALL],
        new_item_ids=[LARGE],
        payment_method_id=PAYPAL,
    )  # only once per order


def test_modify_items_gives_every_item_the_last_pairs_price_and_options() -> None:
    state = tiny()
    ok(
        state,
        "modify_pending_order_items",
        order_id=PENDING,
        item_ids=[RED, SMALL],
        new_item_ids=[BLUE, LARGE],
        payment_method_id=GIFT,
    )
    items = db_of(state).orders[PENDING].items
    # tau2 quirk: ids are per pair, price and options come from the last pair's variant
    assert [(i.item_id, i.price, i.options) for i in items[:2]] == [
        (BLUE, 7.25, {"size": "large"}),
        (LARGE, 7.25, {"size": "large"}),
    ]
    assert (items[0].name, items[0].product_id) == ("Lamp", LAMP)
    diff = 0.0 + (12.3 - 10.1) + (7.25 - 5.0)
    assert history(state, PENDING)[-1] == ("payment", diff, GIFT)
    assert balance(state, ADA, GIFT) == round(20.0 - diff, 2)


def test_modify_items_negative_and_empty_differences_are_refunds() -> None:
    state = tiny()
    ok(
        state,
        "modify_pending_order_items",
        order_id=PENDING,
        item_ids=[BLUE],
        new_item_ids=[RED],
        payment_method_id=GIFT_LOW,
    )  # a refund passes any gift card balance
    assert history(state, PENDING)[-1] == ("refund", 12.3 - 10.1, GIFT_LOW)
    assert balance(state, ADA, GIFT_LOW) == round(1.0 + 12.3 - 10.1, 2)
    ok(state, "modify_pending_order_items", order_id=PENDING_GIFT, item_ids=[], new_item_ids=[], payment_method_id=CARD)
    assert history(state, PENDING_GIFT)[-1] == ("refund", 0.0, CARD)
    assert db_of(state).orders[PENDING_GIFT].status == "pending (item modified)"


def test_modify_items_with_a_repeated_item() -> None:
    state = tiny()
    db_of(state).orders[PENDING].items[1] = db_of(state).orders[PENDING].items[0].model_copy()  # RED, RED, BLUE
    ok(
        state,
        "modify_pending_order_items",
        order_id=PENDING,
        item_ids=[RED, RED],
        new_item_ids=[BLUE, BLUE],
        payment_method_id=CARD,
    )
    assert [i.item_id for i in db_of(state).orders[PENDING].items] == [BLUE, BLUE, BLUE]


def test_modify_items_refusals() -> None:
    state = tiny()

    def modify(
        message: str,
        order_id: str = PENDING,
        item_ids: list[str] | None = None,
        new_item_ids: list[str] | None = None,
        method: str = CARD,
    ) -> None:
        refused(
            state,
            "modify_pending_order_items",
            message,
            order_id=order_id,
            item_ids=[RED] if item_ids is None else item_ids,
            new_item_ids=[BLUE] if new_item_ids is None else new_item_ids,
            payment_method_id=method,
        )

    modify("Order not found", order_id="#W0")
    modify("Non-pending order cannot be modified", order_id=DELIVERED)
    modify("9999999999 not found", item_ids=["9999999999"])
    modify(f"{RED} not found", item_ids=[RED, RED], new_item_ids=[BLUE, BLUE])  # only one red lamp in the order
    modify("The number of items to be exchanged should match", new_item_ids=[BLUE, BLUE])
    modify("The new item id should be different from the old item id", new_item_ids=[RED])
    modify("Variant not found", new_item_ids=[LARGE])  # a mug is not a lamp
    modify(f"New item {GREEN} not found or available", new_item_ids=[GREEN])
    modify("Payment method not found", method=BEN_GIFT)
    modify(
        "Insufficient gift card balance to pay for the new item",
        item_ids=[SMALL],
        new_item_ids=[LARGE],
        method=GIFT_LOW,
    )


# ------------------------------------------------------------------------------------------------------ exchange


def test_exchange_records_a_request_only() -> None:
    state = tiny()
    before = db_of(state).orders[DELIVERED].model_copy(deep=True)
    order = ok(
        state,
        "exchange_delivered_order_items",
        order_id=DELIVERED,
        item_ids=[SMALL, RED],
        new_item_ids=[LARGE, BLUE],
        payment_method_id=PAYPAL,
    )
    assert order["status"] == "exchange requested"
    assert order["exchange_items"] == sorted([SMALL, RED]) and order["exchange_new_items"] == sorted([LARGE, BLUE])
    assert order["exchange_payment_method_id"] == PAYPAL
    assert order["exchange_price_difference"] == round((7.25 - 5.0) + (12.3 - 10.1), 2) == 4.45
    after = db_of(state).orders[DELIVERED]
    assert after.items == before.items and after.payment_history == before.payment_history
    assert balance(state, ADA, GIFT) == 20.0
    refused(
        state,
        "return_delivered_order_items",
        "Non-delivered order cannot be returned",
        order_id=DELIVERED,
        item_ids=[RED],
        payment_method_id=GIFT,
    )


def test_exchange_to_the_same_item_is_allowed() -> None:
    state = tiny()
    order = ok(
        state,
        "exchange_delivered_order_items",
        order_id=DELIVERED,
        item_ids=[RED, RED],
        new_item_ids=[RED, BLUE],
        payment_method_id=PAYPAL,
    )
    assert order["exchange_price_difference"] == 2.2  # rounded, unlike modify


def test_exchange_refusals() -> None:
    state = tiny()

    def exchange(
        message: str,
        order_id: str = DELIVERED,
        item_ids: list[str] | None = None,
        new_item_ids: list[str] | None = None,
        method: str = CARD,
    ) -> None:
        refused(
            state,
            "exchange_delivered_order_items",
            message,
            order_id=order_id,
            item_ids=[RED] if item_ids is None else item_ids,
            new_item_ids=[BLUE] if new_item_ids is None else new_item_ids,
            payment_method_id=method,
        )

    exchange("Order not found", order_id="#W0")
    exchange("Non-delivered order cannot be exchanged", order_id=PENDING)
    exchange(f"Number of {RED} not found.", item_ids=[RED, RED, RED], new_item_ids=[BLUE, BLUE, BLUE])
    exchange("The number of items to be exchanged should match.", new_item_ids=[])
    exchange("Variant not found", new_item_ids=[SMALL])
    exchange(f"New item {GREEN} not found or available", new_item_ids=[GREEN])
    exchange("Payment method not found", method=BEN_GIFT)
    exchange(
        "Insufficient gift card balance to pay for the price difference",
        item_ids=[SMALL],
        new_item_ids=[LARGE],
        method=GIFT_LOW,
    )


# -------------------------------------------------------------------------------------------------------- return


def test_return_records_a_request_only() -> None:
    state = tiny()
    order = ok(state, "return_delivered_order_items", order_id=DELIVERED, item_ids=[SMALL, RED], payment_method_id=GIFT)
    assert order["status"] == "return requested" and order["return_items"] == [RED, SMALL]
    assert order["return_payment_method_id"] == GIFT
    assert len(order["payment_history"]) == 1 and balance(state, ADA, GIFT) == 20.0
    refused(
        state,
        "exchange_delivered_order_items",
        "Non-delivered order cannot be exchanged",
        order_id=DELIVERED,
        item_ids=[RED],
        new_item_ids=[BLUE],
        payment_method_id=GIFT,
    )


def test_return_to_another_gift_card_or_with_no_items() -> None:
    state = tiny()
    ok(state, "return_delivered_order_items", order_id=DELIVERED, item_ids=[], payment_method_id=GIFT_LOW)
    assert db_of(state).orders[DELIVERED].return_items == []


def test_return_refusals() -> None:
    state = tiny()
    refused(
        state, "return_delivered_order_items", "Order not found", order_id="#W0", item_ids=[RED], payment_method_id=GIFT
    )
    refused(
        state,
        "return_delivered_order_items",
        "Non-delivered order cannot be returned",
        order_id=PROCESSED,
        item_ids=[LARGE],
        payment_method_id=PAYPAL,
    )
    refused(
        state,
        "return_delivered_order_items",
        "Payment method not found",
        order_id=DELIVERED,
        item_ids=[RED],
        payment_method_id=BEN_GIFT,
    )
    refused(
        state,
        "return_delivered_order_items",
        "Payment method should be the original payment method",
        order_id=DELIVERED,
        item_ids=[RED],
        payment_method_id=CARD,
    )
    refused(
        state,
        "return_delivered_order_items",
        "Some item not found",
        order_id=DELIVERED,
        item_ids=[RED, RED, RED],
        payment_method_id=GIFT,
    )
    refused(
        state,
        "return_delivered_order_items",
        "Some item not found",
        order_id=DELIVERED,
        item_ids=[BLUE],
        payment_method_id=GIFT,
    )


# ------------------------------------------------------------------------- property tests: no change on failure

TOOL_NAMES = sorted(WRITES | READS | GENERIC)
VALID_ARGUMENTS: dict[str, dict[str, Any]] = {
    "find_user_id_by_email": {"email": "ben.ito@example.com"},
    "find_user_id_by_name_zip": {"first_name": "Ben", "last_name": "Ito", "zip": "20002"},
    "get_user_details": {"user_id": ADA},
    "get_order_details": {"order_id": PENDING},
    "get_product_details": {"product_id": LAMP},
    "get_item_details": {"item_id": RED},
    "list_all_product_types": {},
    "calculate": {"expression": "1 + 1"},
    "transfer_to_human_agents": {"summary": "help"},
    "cancel_pending_order": {"order_id": PENDING, "reason": "no longer needed"},
    "modify_pending_order_address": {"order_id": PENDING, **address_args("1")},
    "modify_pending_order_payment": {"order_id": PENDING, "payment_method_id": PAYPAL},
    "modify_pending_order_items": {
        "order_id": PENDING,
        "item_ids": [RED],
        "new_item_ids": [BLUE],
        "payment_method_id": CARD,
    },
    "exchange_delivered_order_items": {
        "order_id": DELIVERED,
        "item_ids": [RED],
        "new_item_ids": [BLUE],
        "payment_method_id": CARD,
    },
    "return_delivered_order_items": {"order_id": DELIVERED, "item_ids": [RED], "payment_method_id": GIFT},
    "modify_user_address": {"user_id": BEN, **address_args("1")},
}


def test_valid_arguments_succeed() -> None:
    for name, arguments in VALID_ARGUMENTS.items():
        ok(tiny(), name, **arguments)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text or "{}"), dict)
    except ValueError:
        return False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def malformed_calls(draw: st.DrawFn) -> pb.ToolCall:
    name = draw(st.sampled_from(TOOL_NAMES))
    arguments = dict(VALID_ARGUMENTS[name])
    how = draw(st.sampled_from(["garbage", "not_object", "wrong_type", "missing", "extra"]))
    if how == "garbage":
        text = draw(st.text(max_size=40).filter(lambda t: not _is_json_object(t)))
        return pb.ToolCall(name=name, arguments_json=text)
    if how == "not_object":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return pb.ToolCall(name=name, arguments_json=json.dumps(value))
    if how == "wrong_type" and arguments:
        key = draw(st.sampled_from(sorted(arguments)))
        expected_list = isinstance(arguments[key], list)
        arguments[key] = draw(
            json_values.filter(
                lambda v: (
                    not (isinstance(v, str) and not expected_list)
                    and not (isinstance(v, list) and expected_list and all(isinstance(x, str) for x in v))
                )
            )
        )
    elif how == "missing" and arguments:
        del arguments[draw(st.sampled_from(sorted(arguments)))]
    else:
        key = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in arguments))
        arguments[key] = draw(json_values)
    return tool_call(name, arguments)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=malformed_calls())
def test_malformed_arguments_are_errors_that_change_nothing(call: pb.ToolCall) -> None:
    state = tiny()
    before = state.hash()
    result, _ = execute(DOMAIN, state, call)
    assert result.error
    assert result.error_kind in (pb.TOOL_ERROR_KIND_INVALID_JSON, pb.TOOL_ERROR_KIND_INVALID_ARGUMENTS)
    assert state.hash() == before


ORDER_POOL = [*TINY["orders"], "#W9999999", "W0000001"]
ITEM_POOL = [RED, BLUE, GREEN, SMALL, LARGE, LAMP, "0000000000"]
METHOD_POOL = [CARD, PAYPAL, GIFT, GIFT_LOW, BEN_GIFT, "credit_card_0000000"]
item_lists = st.lists(st.sampled_from(ITEM_POOL), max_size=4)


@st.composite
def write_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """Well-typed write calls on ids that may or may not fit: refusals must change nothing."""
    name = draw(st.sampled_from(sorted(WRITES)))
    order_id = draw(st.sampled_from(ORDER_POOL))
    method = draw(st.sampled_from(METHOD_POOL))
    if name == "cancel_pending_order":
        reason = draw(st.sampled_from(["no longer needed", "ordered by mistake", "other"]))
        return name, {"order_id": order_id, "reason": reason}
    if name == "modify_pending_order_address":
        return name, {"order_id": order_id, **address_args("2")}
    if name == "modify_user_address":
        return name, {"user_id": draw(st.sampled_from([ADA, BEN, "nobody"])), **address_args("3")}
    if name == "modify_pending_order_payment":
        return name, {"order_id": order_id, "payment_method_id": method}
    if name == "return_delivered_order_items":
        return name, {"order_id": order_id, "item_ids": draw(item_lists), "payment_method_id": method}
    old = draw(item_lists)
    new = draw(st.one_of(st.lists(st.sampled_from(ITEM_POOL), min_size=len(old), max_size=len(old)), item_lists))
    return name, {"order_id": order_id, "item_ids": old, "new_item_ids": new, "payment_method_id": method}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(write_calls(), min_size=1, max_size=4))
def test_refused_writes_change_nothing(calls: list[tuple[str, dict[str, Any]]]) -> None:
    state = tiny()
    for name, arguments in calls:
        before = state.hash()
        result = run(state, name, **arguments)
        assert "internal error" not in result.content, result.content
        if result.error:
            assert state.hash() == before, f"{name}({arguments}) failed with {result.content} but changed the state"
        RetailDB.model_validate(db_of(state).model_dump())  # the state stays valid


class _CopyingDict(dict[str, Any]):
    """Hands out copies when iterated, as a copy-on-write collection may: mutating those must not count."""

    def values(self) -> Any:
        return [copy.deepcopy(v) for v in super().values()]

    def items(self) -> Any:
        return [(k, copy.deepcopy(v)) for k, v in super().items()]

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(super().get(key, default))


@pytest.mark.parametrize(
    "delivered_action",
    [
        (
            "exchange_delivered_order_items",
            {"order_id": DELIVERED, "item_ids": [RED], "new_item_ids": [BLUE], "payment_method_id": GIFT},
        ),
        ("return_delivered_order_items", {"order_id": DELIVERED, "item_ids": [RED], "payment_method_id": GIFT}),
    ],
)
def test_writes_reach_entities_by_item_access_only(delivered_action: tuple[str, dict[str, Any]]) -> None:
    plain, guarded = tiny(), tiny()
    db = db_of(guarded)
    db.products, db.users, db.orders = (_CopyingDict(db.products), _CopyingDict(db.users), _CopyingDict(db.orders))
    script: list[tuple[str, dict[str, Any]]] = [
        ("modify_pending_order_payment", {"order_id": PENDING_GIFT, "payment_method_id": PAYPAL}),
        ("cancel_pending_order", {"order_id": PENDING_GIFT, "reason": "no longer needed"}),
        (
            "modify_pending_order_items",
            {"order_id": PENDING, "item_ids": [RED, SMALL], "new_item_ids": [BLUE, LARGE], "payment_method_id": GIFT},
        ),
        ("modify_pending_order_address", {"order_id": PENDING, **address_args("5")}),
        delivered_action,
        ("modify_user_address", {"user_id": BEN, **address_args("6")}),
    ]
    for name, arguments in script:
        result = run(plain, name, **arguments)
        assert not result.error, result.content
        assert run(guarded, name, **arguments).content == result.content
    db.products, db.users, db.orders = ({k: v for k, v in dict.items(c)} for c in (db.products, db.users, db.orders))
    assert guarded.hash() == plain.hash()


def test_state_patch_and_copy() -> None:
    state = tiny()
    patched = state.patched({"db": {"users": {ADA: {"address": {"zip": "55555"}}}}})
    assert db_of(patched).users[ADA].address.zip == "55555" and db_of(state).users[ADA].address.zip == "10001"
    copied = state.copy()
    ok(copied, "cancel_pending_order", order_id=PENDING, reason="no longer needed")
    assert copied.hash() != state.hash()


# ----------------------------------------------------------------------------------------------------- generator


def test_generator_is_deterministic_and_fast() -> None:
    start = time.perf_counter()
    db = generate_db(5)
    assert time.perf_counter() - start < 2.0
    assert db.model_dump() == generate_db(5).model_dump()
    assert db.model_dump() != generate_db(6).model_dump()
    assert DOMAIN.initial_state(5).hash() == DOMAIN.initial_state(5).hash()


@pytest.mark.parametrize("seed", [0, 1])
def test_generated_store_looks_like_tau2s(seed: int) -> None:
    db = generate_db(seed)
    assert len(db.users) == 300 and len(db.orders) >= 300 and len(db.products) >= 30
    statuses = Counter(o.status for o in db.orders.values())
    assert set(statuses) == {"pending", "processed", "delivered", "cancelled"}
    assert all(5 <= len(p.variants) <= 20 for p in db.products.values())
    item_ids = {i for p in db.products.values() for i in p.variants}
    assert not item_ids & set(db.products)
    assert all(re.fullmatch(r"\d{10}", i) for i in [*item_ids, *db.products])
    assert all(re.fullmatch(r"#W\d{7}", o) for o in db.orders)
    assert all(re.fullmatch(r"[a-z]+_[a-z]+_\d{4}", u) for u in db.users)
    assert len({u.email for u in db.users.values()}) == len(db.users)
    assert len({(u.name.first_name, u.name.last_name, u.address.zip) for u in db.users.values()}) == len(db.users)
    for user in db.users.values():
        assert 1 <= len(user.payment_methods) <= 4
        for method_id, method in user.payment_methods.items():
            assert method.id == method_id and re.fullmatch(rf"{method.source}_\d{{7}}", method_id)
        assert all(db.orders[o].user_id == user.user_id for o in user.orders)
    assert sum(len(u.orders) for u in db.users.values()) == len(db.orders)
    for order in db.orders.values():
        assert 1 <= len(order.items) <= 5
        for item in order.items:
            variant = db.products[item.product_id].variants[item.item_id]
            assert (item.price, item.options, item.name) == (
                variant.price,
                variant.options,
                db.products[item.product_id].name,
            )
        assert order.payment_history[0].amount == round(sum(i.price for i in order.items), 2)
        assert order.payment_history[0].payment_method_id in db.users[order.user_id].payment_methods
        assert (order.fulfillments == []) == (order.status == "pending")
        assert len(order.payment_history) == (2 if order.status == "cancelled" else 1)
    assert RetailDB.model_validate_json(db.model_dump_json()) == db


# ------------------------------------------------------------------------------------------------------ samplers

# goal -> the tool that would carry it out (None: nothing to write); the tool must agree with `allowed` except
# where only the policy forbids it (the tool does not check the user or the reason's source).
GOAL_TOOLS = {
    "cancel_pending_order": "cancel_pending_order",
    "cancel_non_pending_order": "cancel_pending_order",
    "cancel_with_invalid_reason": "cancel_pending_order",
    "modify_pending_items": "modify_pending_order_items",
    "modify_non_pending_items": "modify_pending_order_items",
    "modify_items_to_unavailable": "modify_pending_order_items",
    "modify_address": "modify_pending_order_address",
    "modify_address_non_pending": "modify_pending_order_address",
    "change_payment": "modify_pending_order_payment",
    "change_payment_insufficient_gift_card": "modify_pending_order_payment",
    "return_delivered_items": "return_delivered_order_items",
    "return_non_delivered_order": "return_delivered_order_items",
    "return_to_other_payment_method": "return_delivered_order_items",
    "exchange_delivered_items": "exchange_delivered_order_items",
    "exchange_non_delivered_order": "exchange_delivered_order_items",
    "exchange_to_unavailable_item": "exchange_delivered_order_items",
    "exchange_to_other_product": "exchange_delivered_order_items",
    "modify_user_address": "modify_user_address",
    "order_status": None,
    "act_on_other_users_order": None,
}


def _arguments_for(tool_name: str, e: dict[str, str]) -> dict[str, Any]:
    if tool_name == "cancel_pending_order":
        return {"order_id": e["order_id"], "reason": e["reason"]}
    if tool_name == "modify_pending_order_address":
        return {"order_id": e["order_id"], **address_args("7")}
    if tool_name == "modify_user_address":
        return {"user_id": e["user_id"], **address_args("8")}
    if tool_name == "modify_pending_order_payment":
        return {"order_id": e["order_id"], "payment_method_id": e["payment_method_id"]}
    if tool_name == "return_delivered_order_items":
        return {
            "order_id": e["order_id"],
            "item_ids": e["item_ids"].split(","),
            "payment_method_id": e["payment_method_id"],
        }
    return {
        "order_id": e["order_id"],
        "item_ids": [e["item_id"]],
        "new_item_ids": [e["new_item_id"]],
        "payment_method_id": e["payment_method_id"],
    }


def test_samplers_cover_allowed_and_refused_goals() -> None:
    assert set(DOMAIN.samplers) == set(GOAL_TOOLS)
    allowed = {
        g for g in GOAL_TOOLS if not any(w in g for w in ("non_", "invalid", "insufficient", "unavailable", "other_"))
    }
    assert {
        "cancel_pending_order",
        "modify_pending_items",
        "modify_address",
        "return_delivered_items",
        "exchange_delivered_items",
        "change_payment",
        "order_status",
        "modify_user_address",
    } == allowed


@pytest.mark.parametrize("seed", [0, 3])
def test_samplers_return_valid_scenarios(seed: int) -> None:
    state = DomainState(generate_db(seed, n_users=120))
    db = db_of(state)
    rng = random.Random(seed)
    for goal, sampler in DOMAIN.samplers.items():
        for _ in range(3):
            scenario = sampler(state, rng)
            assert scenario is not None, goal
            assert scenario.goal == goal and scenario.policy_rule
            e = scenario.entities
            assert scenario.allowed is (
                goal
                in {
                    "cancel_pending_order",
                    "modify_pending_items",
                    "modify_address",
                    "return_delivered_items",
                    "exchange_delivered_items",
                    "change_payment",
                    "order_status",
                    "modify_user_address",
                }
            ), goal
            user = db.users[e["user_id"]]
            if "order_id" in e:
                order = db.orders[e["order_id"]]
                assert (order.user_id == user.user_id) is (goal != "act_on_other_users_order")
                assert e["status"] == order.status
                order_items = [i.item_id for i in order.items]
                if "item_id" in e:
                    assert e["item_id"] in order_items
                    product = next(i.product_id for i in order.items if i.item_id == e["item_id"])
                    same_product = e["new_item_id"] in db.products[product].variants
                    assert same_product is (goal != "exchange_to_other_product")
                if "item_ids" in e:
                    assert not Counter(e["item_ids"].split(",")) - Counter(order_items)
            if "payment_method_id" in e:
                assert e["payment_method_id"] in user.payment_methods
            tool_name = GOAL_TOOLS[goal]
            if tool_name is None:
                continue
            # What the tools can check agrees with the policy's verdict on these entities.
            result = run(_scratch(state, e), tool_name, **_arguments_for(tool_name, e))
            assert result.error is not scenario.allowed, (goal, e, result.content)


def _scratch(state: DomainState, entities: dict[str, str]) -> DomainState:
    """A cheap private state holding just the entities a scenario names (plus the catalogue, read-only here)."""
    db = db_of(state)
    users = {entities["user_id"]: db.users[entities["user_id"]].model_copy(deep=True)}
    orders = {}
    if "order_id" in entities:
        order = db.orders[entities["order_id"]]
        orders[order.order_id] = order.model_copy(deep=True)
        users[order.user_id] = db.users[order.user_id].model_copy(deep=True)
    return DomainState(RetailDB(products=db.products, users=users, orders=orders))


def test_samplers_return_none_without_candidates() -> None:
    empty = DomainState(RetailDB(products={}, users={}, orders={}))
    for goal, sampler in DOMAIN.samplers.items():
        assert sampler(empty, random.Random(0)) is None, goal


# -------------------------------------------------------------------------------------------------- tau2 data


def _tau2_dir() -> Path:
    if not (TAU2_DIR / "db.json").exists():
        pytest.skip(f"tau2 retail data not found at {TAU2_DIR}")
    return TAU2_DIR


def _without_null_optionals(dumped: dict[str, Any]) -> dict[str, Any]:
    orders = {}
    for order_id, order in dumped["orders"].items():
        for key in OPTIONAL_ORDER_FIELDS:
            assert order[key] is None  # present in dumps (and hashes) as null, as in tau2
        orders[order_id] = {k: v for k, v in order.items() if k not in OPTIONAL_ORDER_FIELDS}
    return {**dumped, "orders": orders}


def test_tau2_db_loads_and_round_trips() -> None:
    data_dir = _tau2_dir()
    state = load_tau2_state(data_dir)
    assert state.user is None
    db = db_of(state)
    assert (len(db.products), len(db.users), len(db.orders)) == (50, 500, 1000)
    assert sum(len(p.variants) for p in db.products.values()) == 591
    raw = json.loads((data_dir / "db.json").read_text())
    assert _without_null_optionals(db.model_dump(mode="json")) == raw


def test_tau2_lookups() -> None:
    state = load_tau2_state(_tau2_dir())
    found = ok(state, "find_user_id_by_name_zip", first_name="yusuf", last_name="ROSSI", zip="19122")
    assert found == "yusuf_rossi_9620"
    assert len(json.loads(run(state, "list_all_product_types").content)) == 50


# Gold writes that fail in tau2 too (TOOLS.md 1b.3, "Gold replay"): tau2 logs and skips a failing gold action.
# Task 105: its only action, an exchange, costs more than the gift card holds; its target is the untouched DB.
EXPECTED_GOLD_FAILURES = {
    ("105", "exchange_delivered_order_items"): "Insufficient gift card balance to pay for the price difference",
}
# TOOLS.md 1b.3 lists the tasks with no successful gold write; these are the ones in the train split.
NO_SUCCESSFUL_WRITE = {"10", "24", "25", "50", "57", "67", "105"}


def test_tau2_train_gold_actions_replay() -> None:
    data_dir = _tau2_dir()
    tasks = json.loads((data_dir / "tasks.json").read_text())
    train = set(json.loads((data_dir / "split_tasks.json").read_text())["train"])
    failures: list[str] = []
    without_write: set[str] = set()
    replayed = 0
    for task in tasks:
        if task["id"] not in train:
            continue
        replayed += 1
        actions = task["evaluation_criteria"]["actions"]
        if not any(a["name"] in WRITES for a in actions):
            without_write.add(task["id"])
            continue
        state = load_tau2_state(data_dir)
        wrote = False
        for action in actions:
            result, kind = execute(DOMAIN, state, tool_call(action["name"], action["arguments"], side=Side.AGENT))
            assert kind is not None, f"task {task['id']}: unknown tool {action['name']}"
            assert "internal error" not in result.content, f"task {task['id']}: {result.content}"
            if kind is not ToolKind.WRITE:
                continue
            expected = EXPECTED_GOLD_FAILURES.get((task["id"], action["name"]))
            if expected is not None:
                assert result.error and result.content == f"Error: {expected}", (task["id"], result.content)
                continue
            if result.error:
                failures.append(f"task {task['id']} {action['name']}({action['arguments']}): {result.content}")
            wrote = True
        if not wrote:
            without_write.add(task["id"])
    assert replayed == len(train) == 74
    assert not failures, "\n".join(failures)
    assert without_write == NO_SUCCESSFUL_WRITE & train
