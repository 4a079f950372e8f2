"""Scenario samplers for the toy shop: which order or user a goal is about, and whether the policy allows it.

Goals: `cancel_order` (allowed only for a pending order), `update_address` (allowed only for an active
account; the new address is drawn here), `order_status` (always allowed). Entity keys: `order_id`,
`user_id`, `status` (the order's or account's status), `reason` (cancel_order: the enum value the
customer's words map to) and `address` (update_address). Samplers only read the state.
"""

from __future__ import annotations

import random

from eigenloop.domains.base import DomainState, Scenario, ScenarioSampler
from eigenloop.domains.toy.db import STREETS, CancelReason, ShopDB

RULE_CANCEL = "cancel only orders whose status is pending"
RULE_ADDRESS = "change the address only for active accounts, copied exactly"
RULE_STATUS = "state the order's status word"
REASONS: list[CancelReason] = ["mistake", "no_longer_needed", "found_cheaper"]


def _db(state: DomainState) -> ShopDB:
    db = state.db
    if not isinstance(db, ShopDB):
        raise TypeError(f"expected a toy ShopDB, got {type(db).__name__}")
    return db


def cancel_order(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    # Half the draws ask for a pending order (allowed), half for one that is not (a refusal).
    want_pending = rng.random() < 0.5
    orders = sorted(o for o, order in db.orders.items() if (order.status == "pending") == want_pending)
    if not orders:
        return None
    order = db.orders[rng.choice(orders)]
    entities = {"order_id": order.order_id, "status": order.status, "reason": rng.choice(REASONS)}
    return Scenario("cancel_order", entities, allowed=order.status == "pending", policy_rule=RULE_CANCEL)


def update_address(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    user = db.users[rng.choice(sorted(db.users))]
    address = f"{rng.randint(1, 999)} {rng.choice(STREETS)}"
    entities = {"user_id": user.user_id, "status": user.status, "address": address}
    return Scenario("update_address", entities, allowed=user.status == "active", policy_rule=RULE_ADDRESS)


def order_status(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    order = db.orders[rng.choice(sorted(db.orders))]
    entities = {"order_id": order.order_id, "status": order.status}
    return Scenario("order_status", entities, allowed=True, policy_rule=RULE_STATUS)


SAMPLERS: dict[str, ScenarioSampler] = {
    "cancel_order": cancel_order,
    "update_address": update_address,
    "order_status": order_status,
}
