"""The retail store's 16 agent tools, with tau2-bench's names, arguments, checks, error messages and effects.

Like tau2's, the tools check that ids exist and that the order's status allows the operation, but they do not
enforce the rest of the policy (authentication, confirmation, one user per conversation): that is the agent's
job. Every write tool runs all its checks before it changes anything, so a refused call leaves the state as it
was. Entities that a tool changes are reached by item access on their collection (`db.orders[order_id]`,
`db.users[user_id]`), never through iteration, so the DB's collections can become copy-on-write.
"""

from __future__ import annotations

import ast
import json
import operator
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from eigenloop.domains.base import DomainState, ToolError, ToolKind, tool
from eigenloop.domains.retail.db import (
    CANCEL_REASONS,
    Address,
    GiftCard,
    Order,
    OrderItem,
    PaymentMethod,
    PaymentTransaction,
    Product,
    RetailDB,
    User,
    Variant,
)

_ID = 64
_TEXT = 200
_LIST = 50

OrderId = Annotated[str, Field(description="Order id, starting with '#', e.g. '#W1234567'", max_length=_ID)]
UserId = Annotated[str, Field(description="User id, e.g. 'jane_doe_1234'", max_length=_ID)]
ProductId = Annotated[str, Field(description="Product id (10 digits; not an item id)", max_length=_ID)]
ItemId = Annotated[str, Field(description="Item id: one variant of a product (10 digits)", max_length=_ID)]
ItemIds = Annotated[list[ItemId], Field(max_length=_LIST)]
PaymentMethodId = Annotated[
    str, Field(description="Payment method id from the user's profile, e.g. 'gift_card_1234567'", max_length=_ID)
]
Text = Annotated[str, Field(max_length=_TEXT)]
Address1 = Annotated[str, Field(description="Street address, e.g. '123 Main St'", max_length=_TEXT)]
Address2 = Annotated[str, Field(description="Second line, e.g. 'Apt 1' (may be empty)", max_length=_TEXT)]
StateCode = Annotated[str, Field(description="State code, e.g. 'CA'", max_length=_TEXT)]
Country = Annotated[str, Field(description="Country, e.g. 'USA'", max_length=_TEXT)]
Zip = Annotated[str, Field(description="Zip code, e.g. '12345'", max_length=_TEXT)]
# tau2 takes any string and refuses other reasons inside the tool ("Invalid reason"), after the status check; the
# schema still lists the two accepted values.
Reason = Annotated[
    str,
    Field(description="Why the user cancels", max_length=_TEXT, json_schema_extra={"enum": list(CANCEL_REASONS)}),
]


# ----------------------------------------------------------------------------------------------------- helpers


def _order(db: RetailDB, order_id: str) -> Order:
    if order_id not in db.orders:
        raise ToolError("Order not found")
    return db.orders[order_id]


def _user(db: RetailDB, user_id: str) -> User:
    if user_id not in db.users:
        raise ToolError("User not found")
    return db.users[user_id]


def _product(db: RetailDB, product_id: str) -> Product:
    if product_id not in db.products:
        raise ToolError("Product not found")
    return db.products[product_id]


def _owner_method(db: RetailDB, order: Order, payment_method_id: str) -> PaymentMethod:
    """The order owner's payment method with this id."""
    if order.user_id not in db.users or payment_method_id not in db.users[order.user_id].payment_methods:
        raise ToolError("Payment method not found")
    return db.users[order.user_id].payment_methods[payment_method_id]


def _check_multiplicity(order: Order, item_ids: list[str], message: Callable[[str], str]) -> None:
    """Each id must occur in the order at least as often as in `item_ids`."""
    in_order = Counter(item.item_id for item in order.items)
    wanted = Counter(item_ids)
    for item_id in item_ids:
        if wanted[item_id] > in_order[item_id]:
            raise ToolError(message(item_id))


def _first_item(order: Order, item_id: str) -> OrderItem:
    return next(item for item in order.items if item.item_id == item_id)


def _new_variant(db: RetailDB, order: Order, item_id: str, new_item_id: str) -> Variant:
    """The variant `new_item_id` of the product of the order's item `item_id`; it must exist and be available."""
    variants = _product(db, _first_item(order, item_id).product_id).variants
    if new_item_id not in variants:
        raise ToolError("Variant not found")
    variant = variants[new_item_id]
    if not variant.available:
        raise ToolError(f"New item {new_item_id} not found or available")
    return variant


def _price_difference(order: Order, pairs: list[tuple[str, Variant]]) -> float:
    # Summed pair by pair in list order, starting from 0, and not rounded: tau2 stores exactly this float.
    diff = 0.0
    for item_id, variant in pairs:
        diff += variant.price - _first_item(order, item_id).price
    return diff


def _credit_gift_card(db: RetailDB, user_id: str, payment_method_id: str, amount: float) -> None:
    """Add `amount` (negative: debit) to the user's gift card; other methods have no balance to change."""
    if user_id not in db.users:
        return
    method = db.users[user_id].payment_methods.get(payment_method_id)
    if isinstance(method, GiftCard):
        method.balance = round(method.balance + amount, 2)


# -------------------------------------------------------------------------------------------------- read tools


@tool(kind=ToolKind.READ)
def find_user_id_by_email(
    db: RetailDB, email: Annotated[str, Field(description="The user's email", max_length=_TEXT)]
) -> str:
    """Find a user's id by their email address (case-insensitive). Returns the user id."""
    wanted = email.lower()
    for user_id, user in db.users.items():
        if user.email.lower() == wanted:
            return user_id
    raise ToolError("User not found")


@tool(kind=ToolKind.READ)
def find_user_id_by_name_zip(
    db: RetailDB,
    first_name: Annotated[str, Field(description="First name, e.g. 'John'", max_length=_TEXT)],
    last_name: Annotated[str, Field(description="Last name, e.g. 'Doe'", max_length=_TEXT)],
    zip: Annotated[str, Field(description="Zip code of the user's current address, e.g. '12345'", max_length=_TEXT)],
) -> str:
    """Find a user's id by first name, last name and zip code. Use it when the user cannot give their email.
    Returns the user id."""
    first, last = first_name.lower(), last_name.lower()
    for user_id, user in db.users.items():
        if user.name.first_name.lower() == first and user.name.last_name.lower() == last and user.address.zip == zip:
            return user_id
    raise ToolError("User not found")


@tool(kind=ToolKind.READ)
def get_user_details(db: RetailDB, user_id: UserId) -> User:
    """Get a user's profile: name, email, default address, payment methods and order ids."""
    return _user(db, user_id)


@tool(kind=ToolKind.READ)
def get_order_details(db: RetailDB, order_id: OrderId) -> Order:
    """Get an order: status, address, items, fulfillments (tracking ids) and payment history."""
    return _order(db, order_id)


@tool(kind=ToolKind.READ)
def get_product_details(db: RetailDB, product_id: ProductId) -> Product:
    """Get a product and all its variants (item ids, options, availability, prices)."""
    return _product(db, product_id)


@tool(kind=ToolKind.READ)
def get_item_details(db: RetailDB, item_id: ItemId) -> Variant:
    """Get one item (a product variant) by item id: options, availability and price."""
    for product in db.products.values():
        if item_id in product.variants:
            return product.variants[item_id]
    raise ToolError("Item not found")


@tool(kind=ToolKind.READ)
def list_all_product_types(db: RetailDB) -> str:
    """List every product type as a JSON object mapping product name to product id, sorted by name."""
    return json.dumps({p.name: p.product_id for p in db.products.values()}, sort_keys=True)


# ----------------------------------------------------------------------------------------------- generic tools

_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _evaluate(node.operand)
        return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ToolError(f"Unsupported expression: {ast.dump(node)[:80]}")


@tool(kind=ToolKind.GENERIC)
def calculate(
    db: RetailDB,
    expression: Annotated[
        str, Field(description="Arithmetic with numbers, + - * / and parentheses, e.g. '2 * (3.5 + 1)'", max_length=500)
    ],
) -> str:
    """Calculate the result of an arithmetic expression. Returns the value rounded to 2 decimals."""
    if not all(ch in "0123456789+-*/(). " for ch in expression):
        raise ToolError("Invalid characters in expression")
    # tau2 runs eval() on the filtered text, which also accepts ** and //; here only + - * / and unary signs are
    # evaluated (a tree walk, no eval), so '9**9**9' cannot run away.
    try:
        value = _evaluate(ast.parse(expression.strip(), mode="eval"))
        return str(round(value, 2))
    except ToolError:
        raise
    except (SyntaxError, ArithmeticError, ValueError, RecursionError, MemoryError) as exc:
        raise ToolError(str(exc) or type(exc).__name__) from None


@tool(kind=ToolKind.GENERIC)
def transfer_to_human_agents(
    db: RetailDB,
    summary: Annotated[str, Field(description="A summary of the user's issue", max_length=4000)],
) -> str:
    """Transfer the user to a human agent, with a summary of the issue. Only when the request cannot be handled
    with the available tools."""
    return "Transfer successful"


# ------------------------------------------------------------------------------------------------- write tools


@tool(kind=ToolKind.WRITE)
def cancel_pending_order(db: RetailDB, order_id: OrderId, reason: Reason) -> Order:
    """Cancel a pending order. The reason is 'no longer needed' or 'ordered by mistake'. Every payment is refunded
    to its method: at once for a gift card, in 5-7 business days otherwise."""
    order = _order(db, order_id)
    if order.status != "pending":
        raise ToolError("Non-pending order cannot be cancelled")
    if reason not in CANCEL_REASONS:
        raise ToolError("Invalid reason")
    # As in tau2, every history entry (refunds included) gets a matching refund.
    for entry in list(order.payment_history):
        refund = PaymentTransaction(
            transaction_type="refund", amount=entry.amount, payment_method_id=entry.payment_method_id
        )
        order.payment_history.append(refund)
        _credit_gift_card(db, order.user_id, entry.payment_method_id, entry.amount)
    order.status = "cancelled"
    order.cancel_reason = "no longer needed" if reason == "no longer needed" else "ordered by mistake"
    return order


@tool(kind=ToolKind.WRITE)
def modify_pending_order_address(
    db: RetailDB,
    order_id: OrderId,
    address1: Address1,
    address2: Address2,
    city: Text,
    state: StateCode,
    country: Country,
    zip: Zip,
) -> Order:
    """Change the shipping address of a pending order. The user's default address is not changed."""
    order = _order(db, order_id)
    if "pending" not in order.status:
        raise ToolError("Non-pending order cannot be modified")
    order.address = Address(address1=address1, address2=address2, city=city, country=country, state=state, zip=zip)
    return order


@tool(kind=ToolKind.WRITE)
def modify_pending_order_payment(db: RetailDB, order_id: OrderId, payment_method_id: PaymentMethodId) -> Order:
    """Pay a pending order with a different payment method of the user. A gift card must cover the whole amount;
    the original method is refunded (at once for a gift card)."""
    order = _order(db, order_id)
    if "pending" not in order.status:
        raise ToolError("Non-pending order cannot be modified")
    method = _owner_method(db, order, payment_method_id)
    history = order.payment_history
    if len(history) != 1 or history[0].transaction_type != "payment":
        raise ToolError("There should be exactly one payment for a pending order")
    amount, old_method_id = history[0].amount, history[0].payment_method_id
    if payment_method_id == old_method_id:
        raise ToolError("The new payment method should be different from the current one")
    if isinstance(method, GiftCard) and method.balance < amount:
        raise ToolError("Insufficient gift card balance to pay for the order")
    history.append(PaymentTransaction(transaction_type="payment", amount=amount, payment_method_id=payment_method_id))
    history.append(PaymentTransaction(transaction_type="refund", amount=amount, payment_method_id=old_method_id))
    _credit_gift_card(db, order.user_id, payment_method_id, -amount)
    _credit_gift_card(db, order.user_id, old_method_id, amount)
    return order


@tool(kind=ToolKind.WRITE)
def modify_pending_order_items(
    db: RetailDB,
    order_id: OrderId,
    item_ids: Annotated[ItemIds, Field(description="Item ids in the order to change")],
    new_item_ids: Annotated[
        ItemIds, Field(description="For each item id, the new item id: another variant of the same product")
    ],
    payment_method_id: Annotated[
        PaymentMethodId, Field(description="Payment method that pays, or receives, the price difference")
    ],
) -> Order:
    """Change items of a pending order to other variants of the same products. Possible only once per order: the
    status becomes 'pending (item modified)'. The price difference is charged or refunded to the payment method."""
    order = _order(db, order_id)
    if order.status != "pending":
        raise ToolError("Non-pending order cannot be modified")
    _check_multiplicity(order, item_ids, lambda item_id: f"{item_id} not found")
    if len(item_ids) != len(new_item_ids):
        raise ToolError("The number of items to be exchanged should match")
    pairs: list[tuple[str, Variant]] = []
    for item_id, new_item_id in zip(item_ids, new_item_ids, strict=True):
        if item_id == new_item_id:
            raise ToolError("The new item id should be different from the old item id")
        pairs.append((item_id, _new_variant(db, order, item_id, new_item_id)))
    method = _owner_method(db, order, payment_method_id)
    diff = _price_difference(order, pairs)
    if isinstance(method, GiftCard) and method.balance < diff:
        raise ToolError("Insufficient gift card balance to pay for the new item")

    order.payment_history.append(
        PaymentTransaction(
            transaction_type="payment" if diff > 0 else "refund", amount=abs(diff), payment_method_id=payment_method_id
        )
    )
    _credit_gift_card(db, order.user_id, payment_method_id, -diff)
    # tau2 quirk, kept for state-hash parity: each listed item gets its own new item id, but every one of them takes
    # the price and options of the *last* pair's variant. Duplicated ids take the first item still carrying the id.
    last = pairs[-1][1] if pairs else None
    for item_id, variant in pairs:
        item = _first_item(order, item_id)
        item.item_id = variant.item_id
        if last is not None:
            item.price = last.price
            item.options = dict(last.options)
    order.status = "pending (item modified)"
    return order


@tool(kind=ToolKind.WRITE)
def exchange_delivered_order_items(
    db: RetailDB,
    order_id: OrderId,
    item_ids: Annotated[ItemIds, Field(description="Item ids in the order to exchange")],
    new_item_ids: Annotated[
        ItemIds, Field(description="For each item id, the new item id: an available variant of the same product")
    ],
    payment_method_id: Annotated[
        PaymentMethodId, Field(description="Payment method that pays, or receives, the price difference")
    ],
) -> Order:
    """Request an exchange of items of a delivered order for other variants of the same products. Possible only
    once per order: the status becomes 'exchange requested' and the user is emailed return instructions."""
    order = _order(db, order_id)
    if order.status != "delivered":
        raise ToolError("Non-delivered order cannot be exchanged")
    _check_multiplicity(order, item_ids, lambda item_id: f"Number of {item_id} not found.")
    if len(item_ids) != len(new_item_ids):
        raise ToolError("The number of items to be exchanged should match.")
    pairs = [(i, _new_variant(db, order, i, n)) for i, n in zip(item_ids, new_item_ids, strict=True)]
    method = _owner_method(db, order, payment_method_id)
    diff = round(_price_difference(order, pairs), 2)
    if isinstance(method, GiftCard) and method.balance < diff:
        raise ToolError("Insufficient gift card balance to pay for the price difference")
    # Only a request is recorded: items, payments and balances change when the exchange is processed (not modelled).
    order.status = "exchange requested"
    order.exchange_items = sorted(item_ids)
    order.exchange_new_items = sorted(new_item_ids)
    order.exchange_payment_method_id = payment_method_id
    order.exchange_price_difference = diff
    return order


@tool(kind=ToolKind.WRITE)
def return_delivered_order_items(
    db: RetailDB,
    order_id: OrderId,
    item_ids: Annotated[ItemIds, Field(description="Item ids in the order to return")],
    payment_method_id: Annotated[
        PaymentMethodId,
        Field(description="Refund destination: the order's original payment method or one of the user's gift cards"),
    ],
) -> Order:
    """Request a return of items of a delivered order. The status becomes 'return requested' and the user is
    emailed return instructions; the refund goes to the original payment method or a gift card."""
    order = _order(db, order_id)
    if order.status != "delivered":
        raise ToolError("Non-delivered order cannot be returned")
    method = _owner_method(db, order, payment_method_id)
    original = order.payment_history[0].payment_method_id if order.payment_history else None
    if not isinstance(method, GiftCard) and payment_method_id != original:
        raise ToolError("Payment method should be the original payment method")
    _check_multiplicity(order, item_ids, lambda _: "Some item not found")
    order.status = "return requested"
    order.return_items = sorted(item_ids)
    order.return_payment_method_id = payment_method_id
    return order


@tool(kind=ToolKind.WRITE)
def modify_user_address(
    db: RetailDB,
    user_id: UserId,
    address1: Address1,
    address2: Address2,
    city: Text,
    state: StateCode,
    country: Country,
    zip: Zip,
) -> User:
    """Change a user's default address. Existing orders keep their shipping address."""
    user = _user(db, user_id)
    user.address = Address(address1=address1, address2=address2, city=city, country=country, state=state, zip=zip)
    return user


# -------------------------------------------------------------------------------------------------- assertions


def _db(state: DomainState) -> RetailDB:
    db = state.db
    if not isinstance(db, RetailDB):
        raise TypeError(f"expected a retail DB, got {type(db).__name__}")
    return db


def assert_order_status(state: DomainState, order_id: str, status: str) -> bool:
    db = _db(state)
    return order_id in db.orders and db.orders[order_id].status == status


def assert_order_item_ids(state: DomainState, order_id: str, item_ids: list[str]) -> bool:
    """The order holds exactly these item ids (in any order, with multiplicity)."""
    db = _db(state)
    return order_id in db.orders and sorted(i.item_id for i in db.orders[order_id].items) == sorted(item_ids)


def assert_order_zip(state: DomainState, order_id: str, zip: str) -> bool:
    db = _db(state)
    return order_id in db.orders and db.orders[order_id].address.zip == zip


def assert_user_zip(state: DomainState, user_id: str, zip: str) -> bool:
    db = _db(state)
    return user_id in db.users and db.users[user_id].address.zip == zip


def assert_gift_card_balance(state: DomainState, user_id: str, payment_method_id: str, balance: float) -> bool:
    db = _db(state)
    if user_id not in db.users:
        return False
    method = db.users[user_id].payment_methods.get(payment_method_id)
    return isinstance(method, GiftCard) and abs(method.balance - balance) < 0.005


def gift_card_balance(state: DomainState, user_id: str, payment_method_id: str) -> float | None:
    """The gift card's balance, or None when the user has no such gift card."""
    db = _db(state)
    method = db.users[user_id].payment_methods.get(payment_method_id) if user_id in db.users else None
    return method.balance if isinstance(method, GiftCard) else None


TOOLS: list[Any] = [
    find_user_id_by_email,
    find_user_id_by_name_zip,
    get_user_details,
    get_order_details,
    get_product_details,
    get_item_details,
    list_all_product_types,
    calculate,
    transfer_to_human_agents,
    cancel_pending_order,
    modify_pending_order_address,
    modify_pending_order_payment,
    modify_pending_order_items,
    exchange_delivered_order_items,
    return_delivered_order_items,
    modify_user_address,
]
ASSERTIONS: dict[str, Callable[..., Any]] = {
    "assert_order_status": assert_order_status,
    "assert_order_item_ids": assert_order_item_ids,
    "assert_order_zip": assert_order_zip,
    "assert_user_zip": assert_user_zip,
    "assert_gift_card_balance": assert_gift_card_balance,
    "gift_card_balance": gift_card_balance,
}
