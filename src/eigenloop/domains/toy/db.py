"""The toy shop's state: users and their orders (agent side), and the user's own mailbox (user side)."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel

OrderStatus = Literal["pending", "shipped", "delivered", "cancelled"]
CancelReason = Literal["mistake", "no_longer_needed", "found_cheaper"]

STREETS = ["Elm Street", "Oak Avenue", "Maple Road", "Pine Lane", "Cedar Drive", "Birch Way", "Lake View", "Hill Road"]
FIRST = ["Ada", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lia"]
LAST = ["Ng", "Okafor", "Silva", "Berg", "Costa", "Ito", "Haas", "Moreau", "Patel", "Quinn"]
ID_BLOCKS = 400  # distinct id sets per world seed (with 20 users: 8000 user and 24000 order numbers)
_SCATTER = 7919  # a prime coprime to both id ranges below: a bijection that scatters consecutive numbers
ITEMS = ["kettle", "lamp", "headphones", "backpack", "mug", "notebook", "charger", "blanket", "scarf", "plant pot"]


class Order(BaseModel):
    order_id: str
    user_id: str
    status: OrderStatus
    items: list[str]
    total_cents: int
    cancel_reason: CancelReason | None = None


class User(BaseModel):
    user_id: str
    name: str
    address: str
    status: Literal["active", "suspended"]
    order_ids: list[str]


class ShopDB(BaseModel):
    users: dict[str, User]
    orders: dict[str, Order]


class Email(BaseModel):
    subject: str
    body: str


class Mailbox(BaseModel):
    """What the user can look up on their side: the confirmations the shop sent them."""

    emails: list[Email] = []


def _entity_number(index: int, first: int, reserved: int, last: int) -> int:
    """The id number of entity `index` of all worlds: the first `reserved` (seed 0's world) count up from `first`;
    the rest are scattered over (first + reserved, last], so ids of one world share no long common prefix. A model
    that must learn to copy an id then cannot get by on a memorised prefix (with consecutive numbers it did)."""
    if index < reserved:
        return first + index
    span = last - first - reserved + 1
    return first + reserved + ((index - reserved) * _SCATTER) % span


def generate_db(seed: int = 0, n_users: int = 20) -> ShopDB:
    """A small, seeded shop: `n_users` users with 1-3 orders each, every status represented."""
    rng = random.Random(seed)
    # Each seed numbers its users and orders from its own block (seed 0 keeps U1001 / O10001...), so worlds of
    # different seeds hold different entities: tasks from one are unseen entities for a model trained on another.
    block = seed % ID_BLOCKS
    users: dict[str, User] = {}
    orders: dict[str, Order] = {}
    statuses: list[OrderStatus] = ["pending", "shipped", "delivered", "cancelled"]
    for u in range(n_users):
        user_id = f"U{_entity_number(block * n_users + u, 1001, n_users, 9999)}"
        order_ids = []
        for _ in range(rng.randint(1, 3)):
            order_id = f"O{_entity_number(block * 3 * n_users + len(orders), 10001, 3 * n_users, 99999)}"
            status = statuses[len(orders) % len(statuses)] if len(orders) < len(statuses) else rng.choice(statuses)
            orders[order_id] = Order(
                order_id=order_id,
                user_id=user_id,
                status=status,
                items=rng.sample(ITEMS, rng.randint(1, 3)),
                total_cents=rng.randint(5, 200) * 100 + rng.choice([0, 50, 99]),
                cancel_reason="no_longer_needed" if status == "cancelled" else None,
            )
            order_ids.append(order_id)
        users[user_id] = User(
            user_id=user_id,
            name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            address=f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
            status="active" if rng.random() < 0.85 else "suspended",
            order_ids=order_ids,
        )
    return ShopDB(users=users, orders=orders)
