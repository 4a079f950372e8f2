"""Scenario samplers for the retail store: for each goal, concrete entities of a state and whether the policy
allows the goal for them.

Entity keys: `user_id` (the identified user), `order_id`, `item_id` and `new_item_id` (one item and its
replacement), `item_ids` (comma-separated item ids of the order), `payment_method_id`; `reason` and `status`
carry values rather than ids. Samplers only read the state.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from eigenloop.domains.base import DomainState, Scenario, ScenarioSampler
from eigenloop.domains.retail.db import CANCEL_REASONS, GiftCard, Order, RetailDB, Variant

RULE_AUTH = "identify the user first and act only for that user and their own orders"
RULE_CANCEL = "cancel: only orders with status 'pending' can be cancelled"
RULE_CANCEL_REASON = "cancel: the reason must be 'no longer needed' or 'ordered by mistake'"
RULE_MODIFY = "modify: only orders with status 'pending' can be modified (address, payment or items)"
RULE_MODIFY_ITEMS = "modify items: only to an available variant of the same product, once per order"
RULE_PAYMENT = "modify payment: one different method of the user; a gift card must cover the order total"
RULE_RETURN = "return: only orders with status 'delivered' can be returned"
RULE_RETURN_REFUND = "return: the refund goes to the original payment method or one of the user's gift cards"
RULE_EXCHANGE = "exchange: only orders with status 'delivered' can be exchanged"
RULE_EXCHANGE_ITEMS = "exchange: only to an available variant of the same product, once per order"
RULE_USER_ADDRESS = "a user's default address can be changed after identification and confirmation"
RULE_INFO = "an identified user may get information about their own orders"

INVALID_REASONS = ["found a better price", "shipping takes too long", "changed my mind about the color"]


def _db(state: DomainState) -> RetailDB:
    db = state.db
    if not isinstance(db, RetailDB):
        raise TypeError(f"expected a retail DB, got {type(db).__name__}")
    return db


def _orders(db: RetailDB, *statuses: str) -> list[Order]:
    return [o for o in db.orders.values() if o.status in statuses and o.user_id in db.users]


def _other_variants(db: RetailDB, product_id: str, item_id: str, available: bool) -> list[Variant]:
    product = db.products.get(product_id)
    if product is None:
        return []
    return [v for v in product.variants.values() if v.item_id != item_id and v.available is available]


def _swaps(db: RetailDB, order: Order, available: bool) -> list[tuple[str, Variant]]:
    """(item id in the order, another variant of its product with the given availability)."""
    return [
        (item.item_id, v) for item in order.items for v in _other_variants(db, item.product_id, item.item_id, available)
    ]


def _price(order: Order, item_id: str) -> float:
    return next(i.price for i in order.items if i.item_id == item_id)


def _methods_for_difference(db: RetailDB, order: Order, diff: float) -> list[str]:
    """Methods of the owner that can settle `diff`: any non-gift-card, or a gift card whose balance covers it."""
    methods = db.users[order.user_id].payment_methods
    return [m.id for m in methods.values() if not isinstance(m, GiftCard) or m.balance >= diff]


def _item_swap(
    goal: str, statuses: tuple[str, ...], allowed: bool, rule: str, available: bool = True
) -> ScenarioSampler:
    def sample(state: DomainState, rng: random.Random) -> Scenario | None:
        db = _db(state)
        candidates = [
            (order, item_id, variant, methods)
            for order in _orders(db, *statuses)
            for item_id, variant in _swaps(db, order, available)
            if (methods := _methods_for_difference(db, order, variant.price - _price(order, item_id)))
        ]
        if not candidates:
            return None
        order, item_id, variant, methods = rng.choice(candidates)
        entities = {
            "user_id": order.user_id,
            "order_id": order.order_id,
            "item_id": item_id,
            "new_item_id": variant.item_id,
            "payment_method_id": rng.choice(methods),
            "status": order.status,
        }
        notes = "" if allowed else f"the order is {order.status!r}" if available else "the new item is unavailable"
        return Scenario(goal, entities, allowed, rule, notes)

    return sample


def _other_product_swap(goal: str, status: str, rule: str) -> ScenarioSampler:
    def sample(state: DomainState, rng: random.Random) -> Scenario | None:
        db = _db(state)
        orders = _orders(db, status)
        if not orders or len(db.products) < 2:
            return None
        order = rng.choice(orders)
        item = rng.choice(order.items)
        others = [
            v
            for p in db.products.values()
            if p.product_id != item.product_id
            for v in p.variants.values()
            if v.available
        ]
        if not others:
            return None
        variant = rng.choice(others)
        method = rng.choice(list(db.users[order.user_id].payment_methods))
        entities = {
            "user_id": order.user_id,
            "order_id": order.order_id,
            "item_id": item.item_id,
            "new_item_id": variant.item_id,
            "payment_method_id": method,
            "status": order.status,
        }
        return Scenario(goal, entities, False, rule, "the new item is a different product type")

    return sample


def _order_goal(goal: str, statuses: tuple[str, ...], allowed: bool, rule: str) -> ScenarioSampler:
    def sample(state: DomainState, rng: random.Random) -> Scenario | None:
        orders = _orders(_db(state), *statuses)
        if not orders:
            return None
        order = rng.choice(orders)
        entities = {"user_id": order.user_id, "order_id": order.order_id, "status": order.status}
        return Scenario(goal, entities, allowed, rule, "" if allowed else f"the order is {order.status!r}")

    return sample


def _cancel(goal: str, statuses: tuple[str, ...], allowed: bool, rule: str, valid_reason: bool) -> ScenarioSampler:
    base = _order_goal(goal, statuses, allowed, rule)

    def sample(state: DomainState, rng: random.Random) -> Scenario | None:
        scenario = base(state, rng)
        if scenario is None:
            return None
        reason = rng.choice(CANCEL_REASONS) if valid_reason else rng.choice(INVALID_REASONS)
        notes = scenario.notes if valid_reason else f"the reason {reason!r} is not accepted"
        return Scenario(goal, {**scenario.entities, "reason": reason}, allowed, rule, notes)

    return sample


def _return(goal: str, statuses: tuple[str, ...], allowed: bool, rule: str, to_original: bool) -> ScenarioSampler:
    def sample(state: DomainState, rng: random.Random) -> Scenario | None:
        db = _db(state)
        candidates: list[tuple[Order, str]] = []
        for order in _orders(db, *statuses):
            if not order.payment_history:
                continue
            original = order.payment_history[0].payment_method_id
            for method in db.users[order.user_id].payment_methods.values():
                fits = method.id == original or isinstance(method, GiftCard)
                if fits is to_original:
                    candidates.append((order, method.id))
        if not candidates:
            return None
        order, method_id = rng.choice(candidates)
        items = rng.sample(order.items, rng.randint(1, len(order.items)))
        entities = {
            "user_id": order.user_id,
            "order_id": order.order_id,
            "item_ids": ",".join(i.item_id for i in items),
            "payment_method_id": method_id,
            "status": order.status,
        }
        if allowed:
            notes = ""
        elif to_original:
            notes = f"the order is {order.status!r}"
        else:
            notes = "the refund method is neither the original payment method nor a gift card"
        return Scenario(goal, entities, allowed, rule, notes)

    return sample


def _change_payment(goal: str, allowed: bool) -> ScenarioSampler:
    def sample(state: DomainState, rng: random.Random) -> Scenario | None:
        db = _db(state)
        candidates: list[tuple[Order, str]] = []
        for order in _orders(db, "pending"):
            history = order.payment_history
            if len(history) != 1 or history[0].transaction_type != "payment":
                continue
            for method in db.users[order.user_id].payment_methods.values():
                if method.id == history[0].payment_method_id:
                    continue
                short = isinstance(method, GiftCard) and method.balance < history[0].amount
                if short is not allowed:
                    candidates.append((order, method.id))
        if not candidates:
            return None
        order, method_id = rng.choice(candidates)
        entities = {
            "user_id": order.user_id,
            "order_id": order.order_id,
            "payment_method_id": method_id,
            "status": order.status,
        }
        notes = "" if allowed else "the gift card's balance does not cover the order total"
        return Scenario(goal, entities, allowed, RULE_PAYMENT, notes)

    return sample


def _user_address(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    if not db.users:
        return None
    user_id = rng.choice(list(db.users))
    return Scenario("modify_user_address", {"user_id": user_id}, True, RULE_USER_ADDRESS)


def _other_users_order(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    orders = [o for o in db.orders.values() if o.user_id in db.users]
    if len(db.users) < 2 or not orders:
        return None
    order = rng.choice(orders)
    user_id = rng.choice([u for u in db.users if u != order.user_id])
    entities = {"user_id": user_id, "order_id": order.order_id, "status": order.status}
    return Scenario("act_on_other_users_order", entities, False, RULE_AUTH, f"the order belongs to {order.user_id}")


SAMPLERS: dict[str, Callable[[DomainState, random.Random], Scenario | None]] = {
    # allowed
    "cancel_pending_order": _cancel("cancel_pending_order", ("pending",), True, RULE_CANCEL, True),
    "modify_pending_items": _item_swap("modify_pending_items", ("pending",), True, RULE_MODIFY_ITEMS),
    "modify_address": _order_goal("modify_address", ("pending",), True, RULE_MODIFY),
    "change_payment": _change_payment("change_payment", True),
    "return_delivered_items": _return("return_delivered_items", ("delivered",), True, RULE_RETURN_REFUND, True),
    "exchange_delivered_items": _item_swap("exchange_delivered_items", ("delivered",), True, RULE_EXCHANGE_ITEMS),
    "modify_user_address": _user_address,
    "order_status": _order_goal(
        "order_status",
        (
            "pending",
            "processed",
            "delivered",
            "cancelled",
            "pending (item modified)",
            "return requested",
            "exchange requested",
        ),
        True,
        RULE_INFO,
    ),
    # not allowed
    "cancel_non_pending_order": _cancel(
        "cancel_non_pending_order",
        ("processed", "delivered", "cancelled", "pending (item modified)"),
        False,
        RULE_CANCEL,
        True,
    ),
    "cancel_with_invalid_reason": _cancel("cancel_with_invalid_reason", ("pending",), False, RULE_CANCEL_REASON, False),
    "modify_non_pending_items": _item_swap("modify_non_pending_items", ("processed", "delivered"), False, RULE_MODIFY),
    "modify_address_non_pending": _order_goal(
        "modify_address_non_pending",
        ("processed", "delivered", "cancelled", "pending (item modified)"),
        False,
        RULE_MODIFY,
    ),
    "modify_items_to_unavailable": _item_swap(
        "modify_items_to_unavailable", ("pending",), False, RULE_MODIFY_ITEMS, available=False
    ),
    "change_payment_insufficient_gift_card": _change_payment("change_payment_insufficient_gift_card", False),
    "return_non_delivered_order": _return(
        "return_non_delivered_order", ("pending", "processed", "cancelled"), False, RULE_RETURN, True
    ),
    "return_to_other_payment_method": _return(
        "return_to_other_payment_method", ("delivered",), False, RULE_RETURN_REFUND, False
    ),
    "exchange_non_delivered_order": _item_swap(
        "exchange_non_delivered_order", ("pending", "processed"), False, RULE_EXCHANGE
    ),
    "exchange_to_unavailable_item": _item_swap(
        "exchange_to_unavailable_item", ("delivered",), False, RULE_EXCHANGE_ITEMS, available=False
    ),
    "exchange_to_other_product": _other_product_swap("exchange_to_other_product", "delivered", RULE_EXCHANGE_ITEMS),
    "act_on_other_users_order": _other_users_order,
}
