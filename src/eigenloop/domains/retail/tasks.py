"""Built-in retail tasks: for every goal in SAMPLERS, 2-3 scenarios drawn from the seeded store, each turned into a
complete task (user scenario, gold calls, checker, and a reference dialogue whose tool results come from running
the calls against the real tools). Used by tests, demos and as seed examples for the generator.

Scenarios for a goal are drawn with their own generator, `random.Random(f"{seed}/{goal}")`, so adding or removing
a goal never changes the tasks of another. Allowed goals end with exactly one write whose decisive arguments are
required; not-allowed goals look things up, write nothing, forbid the write the user asks for and require the
reason to be told.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import DomainState, Scenario
from eigenloop.domains.retail import DOMAIN
from eigenloop.domains.retail.db import (
    CITIES,
    STREETS,
    Address,
    CreditCard,
    GiftCard,
    Order,
    OrderItem,
    PaymentMethod,
    RetailDB,
    User,
    Variant,
)
from eigenloop.domains.retail.samplers import SAMPLERS
from eigenloop.env.session import EnvSession
from eigenloop.protocol import assistant_calls, text_message, tool_call, tool_message

TASKS_PER_GOAL = 3
MAX_DRAWS = 40

PERSONAS = [
    "Polite and patient; answers the agent's questions briefly and precisely.",
    "In a hurry: writes short messages and wants the matter settled quickly.",
    "Careful with money: double-checks every amount and payment method before agreeing.",
    "Friendly and a little chatty, but sticks to the facts of the request.",
]
CANCEL_REASON_WORDS = {"no longer needed": "you no longer need it", "ordered by mistake": "you ordered it by mistake"}
CANCEL_REASON_SAID = {"no longer needed": "I don't need it anymore", "ordered by mistake": "I ordered it by mistake"}
# How the user words the samplers' invalid reasons; any other reason is quoted as it is.
INVALID_REASON_SAID = {
    "found a better price": "I found a better price elsewhere",
    "shipping takes too long": "the shipping takes too long",
    "changed my mind about the color": "I changed my mind about the color",
}
ORDER_WRITES = (
    "cancel_pending_order",
    "modify_pending_order_address",
    "modify_pending_order_payment",
    "modify_pending_order_items",
    "exchange_delivered_order_items",
    "return_delivered_order_items",
)
ADDRESS_FIELDS = ["address1", "address2", "city", "state", "country", "zip"]
ACCEPT_REFUSAL = (
    "If the agent explains that this is not possible, accept it: do not ask for any other change, "
    "and end the conversation."
)


# ------------------------------------------------------------------------------------------------------ wording


def _money(amount: float) -> str:
    return f"${amount:,.2f}"


def _options(options: dict[str, str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in options.items())


def _item(item: OrderItem | Variant, name: str = "") -> str:
    return f"{name or getattr(item, 'name', '')} ({_options(item.options)})"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _items(items: list[OrderItem]) -> str:
    counts = Counter(i.item_id for i in items)
    seen: dict[str, OrderItem] = {}
    for i in items:
        seen.setdefault(i.item_id, i)
    return _join([_item(i) + (f" x{counts[k]}" if counts[k] > 1 else "") for k, i in seen.items()])


def _method(method: PaymentMethod) -> str:
    if isinstance(method, CreditCard):
        return f"{method.brand.capitalize()} credit card ending in {method.last_four}"
    if isinstance(method, GiftCard):
        return "gift card"
    return "PayPal account"


def _address(address: dict[str, str]) -> str:
    a = address
    return f"{a['address1']}, {a['address2']}, {a['city']}, {a['state']} {a['zip']}, {a['country']}"


def _new_address(rng: random.Random, current: Address) -> dict[str, str]:
    while True:
        city, state_code, prefix = rng.choice(CITIES)
        second = f"Apt {rng.randint(1, 40)}" if rng.random() < 0.5 else f"Suite {rng.randint(100, 999)}"
        address = {
            "address1": f"{rng.randint(10, 999)} {rng.choice(STREETS)}",
            "address2": second,
            "city": city,
            "state": state_code,
            "country": "USA",
            "zip": f"{prefix}{rng.randint(0, 99):02d}",
        }
        if address["zip"] != current.zip:
            return address


# --------------------------------------------------------------------------------------------- checker pieces


def _listed(name: str, args: dict[str, Any], keys: list[str]) -> pb.ActionMatch:
    return pb.ActionMatch(call=tool_call(name, args), match=pb.ARGUMENT_MATCH_LISTED, compare_args=keys)


def _name_only(name: str) -> pb.ActionMatch:
    return pb.ActionMatch(call=tool_call(name), match=pb.ARGUMENT_MATCH_NAME_ONLY)


def _assertion(function: str, args: dict[str, Any], expected: Any, description: str) -> pb.StateAssertion:
    return pb.StateAssertion(
        function=function,
        arguments_json=json.dumps(args),
        expected_json=json.dumps(expected),
        description=description,
    )


def _status_is(order_id: str, status: str) -> pb.StateAssertion:
    return _assertion(
        "assert_order_status",
        {"order_id": order_id, "status": status},
        True,
        f"order {order_id} has status {status!r}",
    )


def _balance_is(user_id: str, method_id: str, balance: float) -> pb.StateAssertion:
    return _assertion(
        "assert_gift_card_balance",
        {"user_id": user_id, "payment_method_id": method_id, "balance": balance},
        True,
        f"gift card {method_id} holds {_money(balance)}",
    )


# ----------------------------------------------------------------------------------------------------- builder


class _Dialogue:
    """A reference conversation whose tool calls run in a real EnvSession, so every tool message is a real result."""

    def __init__(self, seed: int) -> None:
        self.session = EnvSession(DOMAIN, seed=seed)
        self.messages: list[pb.Message] = []
        self.calls: list[pb.ToolCall] = []

    def user(self, text: str) -> None:
        self.messages.append(text_message(pb.ROLE_USER, text))

    def agent(self, text: str) -> None:
        self.messages.append(text_message(pb.ROLE_ASSISTANT, text))

    def call(self, name: str, args: dict[str, Any]) -> str:
        call = tool_call(name, args, call_id=f"call_{len(self.calls)}")
        result = self.session.call(call)
        if result.error:
            raise RuntimeError(f"gold call {name}({call.arguments_json}) failed: {result.content}")
        self.calls.append(tool_call(name, args))
        self.messages += [assistant_calls(call), tool_message(result)]
        return result.content


@dataclass
class _Spec:
    description: str
    instruction: str
    reason_for_call: str
    known_info: str
    unknown_info: str
    required: list[pb.ActionMatch] = field(default_factory=list)
    forbidden: list[pb.ActionMatch] = field(default_factory=list)
    communicate: list[str] = field(default_factory=list)
    assertions: list[pb.StateAssertion] = field(default_factory=list)


@dataclass
class _Ctx:
    db: RetailDB
    scenario: Scenario
    rng: random.Random
    d: _Dialogue
    identity: str = ""
    auth: pb.ActionMatch = field(default_factory=pb.ActionMatch)

    @property
    def e(self) -> dict[str, str]:
        return self.scenario.entities

    @property
    def user(self) -> User:
        return self.db.users[self.e["user_id"]]

    @property
    def order(self) -> Order:
        return self.db.orders[self.e["order_id"]]

    def line(self, order_item_id: str) -> OrderItem:
        return next(i for i in self.order.items if i.item_id == order_item_id)

    def variant(self, item_id: str) -> tuple[str, Variant]:
        """(product name, variant) of an item id anywhere in the catalogue."""
        return next((p.name, p.variants[item_id]) for p in self.db.products.values() if item_id in p.variants)

    def open(self, opening: str) -> None:
        """The user states the request, the agent authenticates them and reads their profile."""
        user = self.user
        d = self.d
        d.user(opening)
        d.agent(
            "I can help with that. First I need to verify your identity: could you give me the email address on "
            "your account, or your first and last name together with your zip code?"
        )
        if self.rng.random() < 0.5:
            self.identity = f"Your email address is {user.email}."
            d.user(f"Sure, it's {user.email}.")
            found = d.call("find_user_id_by_email", {"email": user.email})
            self.auth = _name_only("find_user_id_by_email")
        else:
            first, last, zip_code = user.name.first_name, user.name.last_name, user.address.zip
            self.identity = f"Your name is {first} {last} and your zip code is {zip_code}."
            d.user(f"I'm {first} {last}, zip code {zip_code}.")
            found = d.call("find_user_id_by_name_zip", {"first_name": first, "last_name": last, "zip": zip_code})
            self.auth = _name_only("find_user_id_by_name_zip")
        if found != user.user_id:
            raise RuntimeError(f"authentication found {found}, expected {user.user_id}")
        d.call("get_user_details", {"user_id": user.user_id})

    def read_order(self) -> pb.ActionMatch:
        order_id = self.e["order_id"]
        self.d.call("get_order_details", {"order_id": order_id})
        return _listed("get_order_details", {"order_id": order_id}, ["order_id"])

    def known(self, *facts: str) -> str:
        return " ".join([self.identity, *facts])


# ------------------------------------------------------------------------------------------------ allowed goals


def _cancel_pending_order(c: _Ctx) -> _Spec:
    order, reason = c.order, c.e["reason"]
    oid, d = order.order_id, c.d
    c.open(f"Hi, I'd like to cancel my order {oid}.")
    read = c.read_order()
    paid = order.payment_history[0]
    method = c.user.payment_methods[paid.payment_method_id]
    d.agent(
        f"Thanks. Order {oid} ({_items(order.items)}) is still pending, so it can be cancelled. "
        "May I ask why you want to cancel it?"
    )
    d.user(CANCEL_REASON_SAID[reason] + ".")
    refund_time = "right away" if isinstance(method, GiftCard) else "within 5-7 business days"
    d.agent(
        f"To confirm: I will cancel order {oid} with the reason '{reason}'. The {_money(paid.amount)} you paid "
        f"will be refunded to your {_method(method)} {refund_time}. Shall I go ahead (yes/no)?"
    )
    d.user("Yes, please.")
    args = {"order_id": oid, "reason": reason}
    d.call("cancel_pending_order", args)
    d.agent(f"Order {oid} is now cancelled, and the refund of {_money(paid.amount)} is on its way.")
    assertions = [_status_is(oid, "cancelled")]
    if isinstance(method, GiftCard):
        balance = round(method.balance + paid.amount, 2)
        assertions.append(_balance_is(order.user_id, method.id, balance))
    return _Spec(
        description=f"Cancel pending order {oid}; the user's reason maps to '{reason}'.",
        instruction=(
            f"You want to cancel your order {oid} because {CANCEL_REASON_WORDS[reason]}. "
            "Confirm when the agent summarizes the cancellation."
        ),
        reason_for_call=f"Cancel order {oid}.",
        known_info=c.known(f"Your order id is {oid}; it contains {_items(order.items)}."),
        unknown_info="Your user id.",
        required=[c.auth, read, _listed("cancel_pending_order", args, ["order_id", "reason"])],
        assertions=assertions,
    )


def _item_swap_request(c: _Ctx) -> tuple[OrderItem, str, Variant, PaymentMethod, float]:
    old = c.line(c.e["item_id"])
    name, new = c.variant(c.e["new_item_id"])
    method = c.user.payment_methods[c.e["payment_method_id"]]
    return old, name, new, method, new.price - old.price


def _difference(diff: float, method: PaymentMethod) -> str:
    if diff > 0:
        return f"the price difference of {_money(diff)} will be charged to your {_method(method)}"
    if diff < 0:
        return f"the price difference of {_money(-diff)} will be refunded to your {_method(method)}"
    return "there is no price difference"


def _modify_pending_items(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid = order.order_id
    old, name, new, method, diff = _item_swap_request(c)
    c.open(f"Hello, I want to change an item in my order {oid} before it ships.")
    read = c.read_order()
    d.agent(f"Order {oid} is pending, so its items can still be changed. Which item, and what would you like instead?")
    d.user(f"The {_item(old)}. I'd like the one with {_options(new.options)} instead.")
    d.call("get_product_details", {"product_id": old.product_id})
    d.agent(
        f"That variant (item {new.item_id}) is available at {_money(new.price)}. Which payment method should pay "
        "or receive the price difference?"
    )
    d.user(f"My {_method(method)}, please.")
    d.agent(
        f"To confirm: in order {oid} I will change the {_item(old)} (item {old.item_id}) to {_item(new, name)} "
        f"(item {new.item_id}); {_difference(diff, method)}. Items can be modified only once, so after this the "
        "order cannot be cancelled or changed again. Is that the only item you want to change, and shall I "
        "proceed (yes/no)?"
    )
    d.user("Yes, that's the only one. Go ahead.")
    args = {
        "order_id": oid,
        "item_ids": [old.item_id],
        "new_item_ids": [new.item_id],
        "payment_method_id": method.id,
    }
    d.call("modify_pending_order_items", args)
    d.agent(f"Done: order {oid} now has the {_item(new, name)}, and its status is 'pending (item modified)'.")
    items = [i.item_id for i in order.items]
    items[items.index(old.item_id)] = new.item_id
    assertions = [
        _status_is(oid, "pending (item modified)"),
        _assertion(
            "assert_order_item_ids",
            {"order_id": oid, "item_ids": items},
            True,
            f"order {oid} holds item {new.item_id} instead of {old.item_id}",
        ),
    ]
    if isinstance(method, GiftCard):
        assertions.append(_balance_is(order.user_id, method.id, round(method.balance - diff, 2)))
    return _Spec(
        description=(
            f"Modify pending order {oid}: swap item {old.item_id} for the available variant {new.item_id} of the "
            f"same product, price difference via {method.id}."
        ),
        instruction=(
            f"In your pending order {oid} you want to change the {_item(old)} to the version with "
            f"{_options(new.options)}. Use your {_method(method)} for any price difference. This is the only "
            "change you want; confirm when the agent summarizes it."
        ),
        reason_for_call=f"Change the options of an item in order {oid}.",
        known_info=c.known(f"Your order id is {oid}; it contains {_items(order.items)}."),
        unknown_info="Your user id, the product and item ids.",
        required=[
            c.auth,
            read,
            _listed("modify_pending_order_items", args, ["order_id", "item_ids", "new_item_ids", "payment_method_id"]),
        ],
        assertions=assertions,
    )


def _modify_address(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid = order.order_id
    new = _new_address(c.rng, order.address)
    c.open(f"Hi, I need to change the shipping address of my order {oid}.")
    read = c.read_order()
    d.agent(f"Order {oid} is pending, so I can change its shipping address. What is the new address?")
    d.user(f"Please ship it to {_address(new)}.")
    d.agent(
        f"To confirm: I will change the shipping address of order {oid} to {_address(new)}. Your account's default "
        "address stays as it is. Shall I proceed (yes/no)?"
    )
    d.user("Yes.")
    args = {"order_id": oid, **new}
    d.call("modify_pending_order_address", args)
    d.agent(f"Order {oid} will now ship to {_address(new)}.")
    return _Spec(
        description=f"Change the shipping address of pending order {oid} only (not the user's default address).",
        instruction=(
            f"You want your pending order {oid} shipped to {_address(new)}. Only this order's address should change, "
            "not your account's default address."
        ),
        reason_for_call=f"Change the shipping address of order {oid}.",
        known_info=c.known(f"Your order id is {oid}. The new address is {_address(new)}."),
        unknown_info="Your user id.",
        required=[c.auth, read, _listed("modify_pending_order_address", args, ["order_id", *ADDRESS_FIELDS])],
        assertions=[
            _assertion("assert_order_zip", {"order_id": oid, "zip": new["zip"]}, True, f"order {oid} ships to {new}"),
            _assertion(
                "assert_user_zip",
                {"user_id": order.user_id, "zip": c.user.address.zip},
                True,
                "the user's default address is unchanged",
            ),
        ],
    )


def _change_payment(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid = order.order_id
    paid = order.payment_history[0]
    old = c.user.payment_methods[paid.payment_method_id]
    new = c.user.payment_methods[c.e["payment_method_id"]]
    c.open(f"Hi, can I change how I pay for my order {oid}?")
    read = c.read_order()
    d.agent(
        f"Order {oid} is pending and was paid {_money(paid.amount)} with your {_method(old)}. "
        "Which payment method would you like to use instead?"
    )
    d.user(f"My {_method(new)}.")
    extra = f" (balance {_money(new.balance)})" if isinstance(new, GiftCard) else ""
    d.agent(
        f"To confirm: order {oid} ({_money(paid.amount)}) will be paid with your {_method(new)}{extra}, and your "
        f"{_method(old)} will be refunded {_money(paid.amount)}. Shall I proceed (yes/no)?"
    )
    d.user("Yes, please.")
    args = {"order_id": oid, "payment_method_id": new.id}
    d.call("modify_pending_order_payment", args)
    d.agent(f"Done: order {oid} is now paid with your {_method(new)}.")
    assertions = [_status_is(oid, "pending")]
    if isinstance(new, GiftCard):
        assertions.append(_balance_is(order.user_id, new.id, round(new.balance - paid.amount, 2)))
    if isinstance(old, GiftCard):
        assertions.append(_balance_is(order.user_id, old.id, round(old.balance + paid.amount, 2)))
    return _Spec(
        description=f"Change the payment method of pending order {oid} from {old.id} to {new.id}.",
        instruction=f"You want to pay for your pending order {oid} with your {_method(new)} instead.",
        reason_for_call=f"Change the payment method of order {oid}.",
        known_info=c.known(f"Your order id is {oid}."),
        unknown_info="Your user id and your payment method ids.",
        required=[c.auth, read, _listed("modify_pending_order_payment", args, ["order_id", "payment_method_id"])],
        assertions=assertions,
    )


def _return_delivered_items(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid = order.order_id
    item_ids = c.e["item_ids"].split(",")
    returned = [c.line(i) for i in item_ids]
    method = c.user.payment_methods[c.e["payment_method_id"]]
    original = order.payment_history[0].payment_method_id
    to = "the original payment method" if method.id == original else "a gift card"
    c.open(f"Hi, I'd like to return some items from my order {oid}.")
    read = c.read_order()
    d.agent(f"Order {oid} was delivered, so its items can be returned. Which items would you like to return?")
    d.user(f"The {_items(returned)}.")
    d.agent(
        "The refund can go to the original payment method or to a gift card on your account. Where would you like it?"
    )
    d.user(f"To my {_method(method)}.")
    total = round(sum(i.price for i in returned), 2)
    d.agent(
        f"To confirm: I will request a return of {_items(returned)} from order {oid}, and the refund of "
        f"{_money(total)} will go to your {_method(method)}. Is that everything, and shall I proceed (yes/no)?"
    )
    d.user("Yes, that's all. Go ahead.")
    args = {"order_id": oid, "item_ids": item_ids, "payment_method_id": method.id}
    d.call("return_delivered_order_items", args)
    d.agent(f"The return for order {oid} is requested; you'll receive an email explaining how to send the items back.")
    return _Spec(
        description=f"Return items {item_ids} of delivered order {oid}, refund to {to} ({method.id}).",
        instruction=(
            f"You want to return the {_items(returned)} from your delivered order {oid}, with the refund going to "
            f"your {_method(method)}. Keep the other items."
        ),
        reason_for_call=f"Return items from order {oid}.",
        known_info=c.known(f"Your order id is {oid}; it contains {_items(order.items)}."),
        unknown_info="Your user id and the item ids.",
        required=[c.auth, read, _listed("return_delivered_order_items", args, ["order_id", "payment_method_id"])],
        assertions=[_status_is(oid, "return requested")],
    )


def _exchange_delivered_items(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid = order.order_id
    old, name, new, method, diff = _item_swap_request(c)
    c.open(f"Hi, I want to exchange an item from my order {oid}.")
    read = c.read_order()
    d.agent(f"Order {oid} was delivered, so its items can be exchanged. Which item, and what would you like instead?")
    d.user(f"The {_item(old)}; I'd like the one with {_options(new.options)}.")
    d.call("get_product_details", {"product_id": old.product_id})
    d.agent(
        f"That variant (item {new.item_id}) is available at {_money(new.price)}. Which payment method should pay "
        "or receive the price difference?"
    )
    d.user(f"My {_method(method)}.")
    d.agent(
        f"To confirm: I will request an exchange in order {oid} of the {_item(old)} for {_item(new, name)}; "
        f"{_difference(diff, method)}. An order can be exchanged only once: is this the only item, and shall I "
        "proceed (yes/no)?"
    )
    d.user("Yes, only that one. Please go ahead.")
    args = {
        "order_id": oid,
        "item_ids": [old.item_id],
        "new_item_ids": [new.item_id],
        "payment_method_id": method.id,
    }
    d.call("exchange_delivered_order_items", args)
    d.agent(
        f"The exchange for order {oid} is requested; you'll receive an email explaining how to return the old item."
    )
    return _Spec(
        description=(
            f"Exchange item {old.item_id} of delivered order {oid} for the available variant {new.item_id} of the "
            f"same product, price difference via {method.id}."
        ),
        instruction=(
            f"You want to exchange the {_item(old)} from your delivered order {oid} for the version with "
            f"{_options(new.options)}. Use your {_method(method)} for any price difference. Nothing else should "
            "be exchanged."
        ),
        reason_for_call=f"Exchange an item from order {oid}.",
        known_info=c.known(f"Your order id is {oid}; it contains {_items(order.items)}."),
        unknown_info="Your user id, the product and item ids.",
        required=[
            c.auth,
            read,
            _listed(
                "exchange_delivered_order_items", args, ["order_id", "item_ids", "new_item_ids", "payment_method_id"]
            ),
        ],
        assertions=[_status_is(oid, "exchange requested")],
    )


def _modify_user_address(c: _Ctx) -> _Spec:
    user, d = c.user, c.d
    new = _new_address(c.rng, user.address)
    c.open("Hi, I moved and need to update the address on my account.")
    d.agent("Certainly. What is your new address?")
    d.user(f"It's {_address(new)}.")
    d.agent(
        f"To confirm: I will change your default address to {_address(new)}. Existing orders keep their shipping "
        "address. Shall I proceed (yes/no)?"
    )
    d.user("Yes.")
    args = {"user_id": user.user_id, **new}
    d.call("modify_user_address", args)
    d.agent(f"Your default address is now {_address(new)}.")
    return _Spec(
        description=f"Change the default address of user {user.user_id}.",
        instruction=(
            f"You moved to {_address(new)} and want the default address on your account updated. "
            "You don't want to change any order."
        ),
        reason_for_call="Update the account's default address.",
        known_info=c.known(f"Your new address is {_address(new)}."),
        unknown_info="Your user id.",
        required=[c.auth, _listed("modify_user_address", args, ["user_id", *ADDRESS_FIELDS])],
        assertions=[
            _assertion(
                "assert_user_zip",
                {"user_id": user.user_id, "zip": new["zip"]},
                True,
                f"user {user.user_id} lives at {new['zip']}",
            )
        ],
    )


def _order_status(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid, status = order.order_id, order.status
    tracking = [t for f in order.fulfillments for t in f.tracking_id]
    c.open(f"Hi, could you tell me the status of my order {oid}?")
    read = c.read_order()
    answer = f"Your order {oid} is {status}."
    if tracking:
        answer += f" Its tracking number is {tracking[0]}."
    d.agent(answer)
    return _Spec(
        description=f"Tell the user the status of order {oid} ('{status}')"
        + (" and its tracking id." if tracking else "."),
        instruction=(
            f"You want to know the status of your order {oid}, and its tracking number if it has one. "
            "You don't want to change anything."
        ),
        reason_for_call=f"Ask about the status of order {oid}.",
        known_info=c.known(f"Your order id is {oid}."),
        unknown_info="The order's status and tracking number.",
        required=[c.auth, read],
        communicate=[status, *tracking[:1]],
        assertions=[_status_is(oid, status)],
    )


# -------------------------------------------------------------------------------------------- not-allowed goals


def _status_refusal(c: _Ctx, request: str, opening: str, write: str, args: dict[str, Any], rule: str) -> _Spec:
    """The order's status rules the request out: read it, say the status, change nothing."""
    order, d = c.order, c.d
    oid, status = order.order_id, order.status
    c.open(opening)
    read = c.read_order()
    d.agent(
        f"I'm sorry, but order {oid} is {'already ' if status == 'cancelled' else ''}{status}, and {rule}. "
        f"So I can't {request} for you."
    )
    return _Spec(
        description=f"Refuse to {request}: the order is '{status}' ({c.scenario.policy_rule}).",
        instruction="",
        reason_for_call="",
        known_info="",
        unknown_info="Your user id and the order's current status.",
        required=[c.auth, read],
        forbidden=[_listed(write, args, ["order_id"])],
        communicate=[status],
        assertions=[_status_is(oid, status)],
    )


def _cancel_non_pending_order(c: _Ctx) -> _Spec:
    oid, reason = c.e["order_id"], c.e["reason"]
    spec = _status_refusal(
        c,
        f"cancel order {oid}",
        f"Hi, I'd like to cancel my order {oid}; {CANCEL_REASON_SAID[reason]}.",
        "cancel_pending_order",
        {"order_id": oid, "reason": reason},
        "only pending orders can be cancelled",
    )
    spec.instruction = f"You want to cancel your order {oid} because {CANCEL_REASON_WORDS[reason]}. {ACCEPT_REFUSAL}"
    spec.reason_for_call = f"Cancel order {oid}."
    spec.known_info = c.known(f"Your order id is {oid}.")
    return spec


def _cancel_with_invalid_reason(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid, reason = order.order_id, c.e["reason"]
    c.open(f"Hi, I want to cancel my order {oid}.")
    read = c.read_order()
    d.agent(f"Order {oid} is pending. May I ask why you want to cancel it?")
    d.user(f"Because {INVALID_REASON_SAID.get(reason, reason)}.")
    d.agent(
        "I'm sorry, but an order can only be cancelled when it is no longer needed or was ordered by mistake. "
        f"'{reason}' is not one of those reasons, so I can't cancel order {oid}."
    )
    return _Spec(
        description=f"Refuse to cancel pending order {oid}: the reason '{reason}' is not accepted.",
        instruction=(
            f"You want to cancel your order {oid}; your reason: {INVALID_REASON_SAID.get(reason, reason)}. "
            "That is your only reason: do not say that "
            f"you no longer need it or that you ordered it by mistake. {ACCEPT_REFUSAL}"
        ),
        reason_for_call=f"Cancel order {oid}.",
        known_info=c.known(f"Your order id is {oid}."),
        unknown_info="Your user id and which cancellation reasons the store accepts.",
        required=[c.auth, read],
        forbidden=[_listed("cancel_pending_order", {"order_id": oid, "reason": reason}, ["order_id"])],
        communicate=["no longer needed", "ordered by mistake"],
        assertions=[_status_is(oid, "pending")],
    )


def _swap_args(c: _Ctx) -> dict[str, Any]:
    return {
        "order_id": c.e["order_id"],
        "item_ids": [c.e["item_id"]],
        "new_item_ids": [c.e["new_item_id"]],
        "payment_method_id": c.e["payment_method_id"],
    }


def _modify_non_pending_items(c: _Ctx) -> _Spec:
    oid = c.e["order_id"]
    old, _, new, method, _ = _item_swap_request(c)
    spec = _status_refusal(
        c,
        f"change the items of order {oid}",
        f"Hi, I'd like to change the {_item(old)} in my order {oid} to the one with {_options(new.options)}.",
        "modify_pending_order_items",
        _swap_args(c),
        "only pending orders can have their items modified",
    )
    spec.instruction = (
        f"You want to change the {_item(old)} in your order {oid} to the version with {_options(new.options)}, "
        f"paying any difference with your {_method(method)}. You want it modified, not returned or exchanged. "
        f"{ACCEPT_REFUSAL}"
    )
    spec.reason_for_call = f"Change an item of order {oid}."
    spec.known_info = c.known(f"Your order id is {oid}; it contains {_items(c.order.items)}.")
    return spec


def _modify_address_non_pending(c: _Ctx) -> _Spec:
    order = c.order
    oid = order.order_id
    new = _new_address(c.rng, order.address)
    spec = _status_refusal(
        c,
        f"change the shipping address of order {oid}",
        f"Hi, please change the shipping address of my order {oid} to {_address(new)}.",
        "modify_pending_order_address",
        {"order_id": oid, **new},
        "only pending orders can be modified",
    )
    spec.instruction = f"You want your order {oid} shipped to {_address(new)}. {ACCEPT_REFUSAL}"
    spec.reason_for_call = f"Change the shipping address of order {oid}."
    spec.known_info = c.known(f"Your order id is {oid}. The new address is {_address(new)}.")
    spec.assertions.append(
        _assertion("assert_order_zip", {"order_id": oid, "zip": order.address.zip}, True, "the address is unchanged")
    )
    return spec


def _unavailable(c: _Ctx, verb: str, write: str) -> _Spec:
    order, d = c.order, c.d
    oid = order.order_id
    old, name, new, method, _ = _item_swap_request(c)
    c.open(f"Hi, I'd like to {verb} the {_item(old)} in my order {oid}.")
    read = c.read_order()
    d.agent("Sure, which variant would you like instead?")
    d.user(f"The one with {_options(new.options)}, paid with my {_method(method)} if there's a difference.")
    d.call("get_product_details", {"product_id": old.product_id})
    product_read = _listed("get_product_details", {"product_id": old.product_id}, ["product_id"])
    d.agent(
        f"I'm sorry, but the {_item(new, name)} is not available at the moment, and an item can only be switched to "
        f"an available variant of the same product. So I can't {verb} it; order {oid} stays as it is."
    )
    return _Spec(
        description=f"Refuse to {verb} item {old.item_id} of order {oid}: the new item {new.item_id} is unavailable.",
        instruction=(
            f"You want to {verb} the {_item(old)} in your order {oid} for the version with {_options(new.options)}, "
            f"paying any difference with your {_method(method)}. You want exactly that version and no other. "
            f"{ACCEPT_REFUSAL}"
        ),
        reason_for_call=f"{verb.capitalize()} an item of order {oid}.",
        known_info=c.known(f"Your order id is {oid}; it contains {_items(order.items)}."),
        unknown_info="Your user id, the item ids and whether the version you want is in stock.",
        required=[c.auth, read, product_read],
        forbidden=[_listed(write, _swap_args(c), ["order_id"])],
        communicate=["available"],
        assertions=[_status_is(oid, order.status)],
    )


def _modify_items_to_unavailable(c: _Ctx) -> _Spec:
    return _unavailable(c, "change", "modify_pending_order_items")


def _change_payment_insufficient_gift_card(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid = order.order_id
    paid = order.payment_history[0]
    card = c.user.payment_methods[c.e["payment_method_id"]]
    if not isinstance(card, GiftCard):
        raise RuntimeError(f"{card.id} is not a gift card")
    c.open(f"Hi, I'd like to pay for my order {oid} with my gift card instead.")
    read = c.read_order()
    d.agent(
        f"I'm sorry, but your gift card has a balance of {_money(card.balance)}, which does not cover the order "
        f"total of {_money(paid.amount)}. A gift card must cover the whole amount, so I can't switch order {oid} "
        "to it."
    )
    return _Spec(
        description=(
            f"Refuse to pay order {oid} ({_money(paid.amount)}) with gift card {card.id}: its balance "
            f"{_money(card.balance)} is too low."
        ),
        instruction=(
            f"You want to pay for your order {oid} with your gift card instead of your current payment method. "
            f"You do not want to use any other payment method. {ACCEPT_REFUSAL}"
        ),
        reason_for_call=f"Change the payment method of order {oid}.",
        known_info=c.known(f"Your order id is {oid}."),
        unknown_info="Your user id and your gift card's balance.",
        required=[c.auth, read],
        forbidden=[
            _listed("modify_pending_order_payment", {"order_id": oid, "payment_method_id": card.id}, ["order_id"])
        ],
        communicate=["balance"],
        assertions=[_balance_is(order.user_id, card.id, card.balance)],
    )


def _return_non_delivered_order(c: _Ctx) -> _Spec:
    oid = c.e["order_id"]
    item_ids = c.e["item_ids"].split(",")
    returned = [c.line(i) for i in item_ids]
    spec = _status_refusal(
        c,
        f"return items of order {oid}",
        f"Hi, I'd like to return the {_items(returned)} from my order {oid}.",
        "return_delivered_order_items",
        {"order_id": oid, "item_ids": item_ids, "payment_method_id": c.e["payment_method_id"]},
        "only delivered orders can be returned",
    )
    spec.instruction = f"You want to return the {_items(returned)} from your order {oid}. {ACCEPT_REFUSAL}"
    spec.reason_for_call = f"Return items from order {oid}."
    spec.known_info = c.known(f"Your order id is {oid}; it contains {_items(c.order.items)}.")
    return spec


def _return_to_other_payment_method(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid = order.order_id
    item_ids = c.e["item_ids"].split(",")
    returned = [c.line(i) for i in item_ids]
    wanted = c.user.payment_methods[c.e["payment_method_id"]]
    original = c.user.payment_methods[order.payment_history[0].payment_method_id]
    c.open(f"Hi, I'd like to return the {_items(returned)} from my order {oid}, refunded to my {_method(wanted)}.")
    read = c.read_order()
    d.agent(
        f"I'm sorry, but a refund can only go to the order's original payment method (your {_method(original)}) "
        f"or to a gift card on your account, not to your {_method(wanted)}. So I can't set up the return that way."
    )
    args = {"order_id": oid, "item_ids": item_ids, "payment_method_id": wanted.id}
    return _Spec(
        description=(
            f"Refuse to refund a return of order {oid} to {wanted.id}: it is neither the original payment method "
            f"({original.id}) nor a gift card."
        ),
        instruction=(
            f"You want to return the {_items(returned)} from your delivered order {oid}, with the refund going to "
            f"your {_method(wanted)} and nowhere else; if that is not possible you would rather keep the items. "
            f"{ACCEPT_REFUSAL}"
        ),
        reason_for_call=f"Return items from order {oid}.",
        known_info=c.known(f"Your order id is {oid}; it contains {_items(order.items)}."),
        unknown_info="Your user id and where refunds may go.",
        required=[c.auth, read],
        forbidden=[_listed("return_delivered_order_items", args, ["order_id"])],
        communicate=["original payment method"],
        assertions=[_status_is(oid, "delivered")],
    )


def _exchange_non_delivered_order(c: _Ctx) -> _Spec:
    oid = c.e["order_id"]
    old, _, new, method, _ = _item_swap_request(c)
    spec = _status_refusal(
        c,
        f"exchange items of order {oid}",
        f"Hi, I'd like to exchange the {_item(old)} from my order {oid} for the one with {_options(new.options)}.",
        "exchange_delivered_order_items",
        _swap_args(c),
        "only delivered orders can be exchanged",
    )
    spec.instruction = (
        f"You want to exchange the {_item(old)} from your order {oid} for the version with "
        f"{_options(new.options)}, paying any difference with your {_method(method)}. You want an exchange, not a "
        f"modification of the order. {ACCEPT_REFUSAL}"
    )
    spec.reason_for_call = f"Exchange an item from order {oid}."
    spec.known_info = c.known(f"Your order id is {oid}; it contains {_items(c.order.items)}.")
    return spec


def _exchange_to_unavailable_item(c: _Ctx) -> _Spec:
    return _unavailable(c, "exchange", "exchange_delivered_order_items")


def _exchange_to_other_product(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid = order.order_id
    old, name, new, method, _ = _item_swap_request(c)
    c.open(f"Hi, I'd like to exchange the {_item(old)} from my order {oid} for a {_item(new, name)}.")
    read = c.read_order()
    d.agent(
        f"I'm sorry, but an item can only be exchanged for another variant of the same product. A {name} is a "
        f"different product from a {old.name}, so I can't exchange it."
    )
    return _Spec(
        description=f"Refuse to exchange a {old.name} of order {oid} for a {name}: a different product type.",
        instruction=(
            f"You want to exchange the {_item(old)} from your delivered order {oid} for a {_item(new, name)}, "
            f"paying any difference with your {_method(method)}. {ACCEPT_REFUSAL}"
        ),
        reason_for_call=f"Exchange an item from order {oid}.",
        known_info=c.known(f"Your order id is {oid}; it contains {_items(order.items)}."),
        unknown_info="Your user id and the exchange rules.",
        required=[c.auth, read],
        forbidden=[_listed("exchange_delivered_order_items", _swap_args(c), ["order_id"])],
        communicate=["same product"],
        assertions=[_status_is(oid, "delivered")],
    )


def _act_on_other_users_order(c: _Ctx) -> _Spec:
    order, d = c.order, c.d
    oid, status = order.order_id, order.status
    owner = c.db.users[order.user_id].name
    user_name = c.user.name
    requested: tuple[str, dict[str, Any]]
    if status == "pending":
        want, requested = "cancel", ("cancel_pending_order", {"order_id": oid, "reason": "no longer needed"})
    elif status == "delivered":
        pm = order.payment_history[0].payment_method_id
        items = [i.item_id for i in order.items]
        want = "return all the items of"
        requested = ("return_delivered_order_items", {"order_id": oid, "item_ids": items, "payment_method_id": pm})
    else:
        raise RuntimeError(f"no request for a {status} order")
    c.open(f"Hi, I need to {want} order {oid}.")
    d.agent(
        f"I'm sorry, but order {oid} is not one of the orders on your account, so I can't look into it or change "
        f"it for you. The account holder who placed it would need to contact us themselves."
    )
    forbidden = [_listed(requested[0], requested[1], ["order_id"])]
    forbidden += [_listed(w, {"order_id": oid}, ["order_id"]) for w in ORDER_WRITES if w != requested[0]]
    return _Spec(
        description=(
            f"Refuse to {want} order {oid}: it belongs to {order.user_id}, not to the authenticated user "
            f"{c.user.user_id}."
        ),
        instruction=(
            f"You are {user_name.first_name} {user_name.last_name}. You want to {want} order {oid}, which "
            f"{owner.first_name} {owner.last_name}, a relative of yours, placed on their own account; you are "
            f"handling it for them ({'they no longer need it' if status == 'pending' else 'they want a refund'}). "
            f"You can only identify yourself, not them. {ACCEPT_REFUSAL}"
        ),
        reason_for_call=f"{want.capitalize()} order {oid} on behalf of a relative.",
        known_info=c.known(f"The order id is {oid}. It was placed by {owner.first_name} {owner.last_name}."),
        unknown_info=f"{owner.first_name}'s email and zip code.",
        required=[c.auth, _listed("get_user_details", {"user_id": c.user.user_id}, ["user_id"])],
        forbidden=forbidden,
        assertions=[_status_is(oid, status)],
    )


# ------------------------------------------------------------------------------------------------------- tasks

_Builder = Callable[[_Ctx], _Spec]
# Goals whose sampler can return scenarios the builder has no request for.
_ACCEPT: dict[str, Callable[[RetailDB, Scenario], bool]] = {
    "act_on_other_users_order": lambda db, s: db.orders[s.entities["order_id"]].status in ("pending", "delivered"),
}
BUILDERS: dict[str, _Builder] = {
    "cancel_pending_order": _cancel_pending_order,
    "modify_pending_items": _modify_pending_items,
    "modify_address": _modify_address,
    "change_payment": _change_payment,
    "return_delivered_items": _return_delivered_items,
    "exchange_delivered_items": _exchange_delivered_items,
    "modify_user_address": _modify_user_address,
    "order_status": _order_status,
    "cancel_non_pending_order": _cancel_non_pending_order,
    "cancel_with_invalid_reason": _cancel_with_invalid_reason,
    "modify_non_pending_items": _modify_non_pending_items,
    "modify_address_non_pending": _modify_address_non_pending,
    "modify_items_to_unavailable": _modify_items_to_unavailable,
    "change_payment_insufficient_gift_card": _change_payment_insufficient_gift_card,
    "return_non_delivered_order": _return_non_delivered_order,
    "return_to_other_payment_method": _return_to_other_payment_method,
    "exchange_non_delivered_order": _exchange_non_delivered_order,
    "exchange_to_unavailable_item": _exchange_to_unavailable_item,
    "exchange_to_other_product": _exchange_to_other_product,
    "act_on_other_users_order": _act_on_other_users_order,
}


def _any(db: RetailDB, scenario: Scenario) -> bool:
    return True


def _scenarios(state: DomainState, goal: str, rng: random.Random) -> list[Scenario]:
    """Up to TASKS_PER_GOAL scenarios of distinct entities (order, or user for user-level goals)."""
    db = state.db
    if not isinstance(db, RetailDB):
        raise TypeError(f"expected a retail DB, got {type(db).__name__}")
    accept = _ACCEPT.get(goal, _any)
    found: dict[str, Scenario] = {}
    for _ in range(MAX_DRAWS):
        scenario = SAMPLERS[goal](state, rng)
        if scenario is None:
            break
        key = scenario.entities.get("order_id") or scenario.entities["user_id"]
        if key not in found and accept(db, scenario):
            found[key] = scenario
        if len(found) == TASKS_PER_GOAL:
            break
    return list(found.values())


def _task(goal: str, n: int, spec: _Spec, d: _Dialogue, persona: str, seed: int) -> pb.Task:
    basis = [pb.REWARD_COMPONENT_STATE, pb.REWARD_COMPONENT_ACTION]
    if spec.communicate:
        basis.append(pb.REWARD_COMPONENT_COMMUNICATE)
    if spec.assertions:
        basis.append(pb.REWARD_COMPONENT_ASSERTION)
    return pb.Task(
        id=f"retail-{goal}-{n}",
        domain="retail",
        description=spec.description,
        user=pb.UserScenario(
            instruction=spec.instruction,
            persona=persona,
            known_info=spec.known_info,
            unknown_info=spec.unknown_info,
            reason_for_call=spec.reason_for_call,
        ),
        reference_dialogue=d.messages,
        checker=pb.Checker(
            gold_actions=d.calls,
            required_actions=spec.required,
            forbidden_actions=spec.forbidden,
            communicate_info=spec.communicate,
            assertions=spec.assertions,
            reward_basis=basis,
        ),
        provenance=pb.Provenance(source="builtin", seed=seed, backend="procedural"),
    )


def sample_tasks(seed: int = 0) -> list[pb.Task]:
    """2-3 tasks for every goal in SAMPLERS, grounded in the store `DOMAIN.initial_state(seed)`; deterministic."""
    state = DOMAIN.initial_state(seed)
    db = state.db
    if not isinstance(db, RetailDB):
        raise TypeError(f"expected a retail DB, got {type(db).__name__}")
    missing = set(SAMPLERS) - set(BUILDERS)
    if missing:
        raise RuntimeError(f"retail goals without a task builder: {sorted(missing)}")
    tasks: list[pb.Task] = []
    for goal in SAMPLERS:
        rng = random.Random(f"{seed}/{goal}")
        for n, scenario in enumerate(_scenarios(state, goal, rng), start=1):
            d = _Dialogue(seed)
            spec = BUILDERS[goal](_Ctx(db, scenario, rng, d))
            tasks.append(_task(goal, n, spec, d, rng.choice(PERSONAS), seed))
    return tasks
