"""The toy shop's tools. They check that ids exist but do not enforce the policy: that is the agent's job."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from eigenloop.domains.base import DomainState, Side, ToolError, ToolKind, tool
from eigenloop.domains.toy.db import CancelReason, Email, Mailbox, Order, OrderStatus, ShopDB, User

OrderId = Annotated[str, Field(description="Order id, e.g. O10001", max_length=32)]
UserId = Annotated[str, Field(description="User id, e.g. U1001", max_length=32)]


def _order(db: ShopDB, order_id: str) -> Order:
    if order_id not in db.orders:
        raise ToolError(f"Order {order_id} not found")
    return db.orders[order_id]


def _user(db: ShopDB, user_id: str) -> User:
    if user_id not in db.users:
        raise ToolError(f"User {user_id} not found")
    return db.users[user_id]


@tool(kind=ToolKind.READ)
def get_user(db: ShopDB, user_id: UserId) -> User:
    """Look up a user's profile: name, address, account status and order ids."""
    return _user(db, user_id)


@tool(kind=ToolKind.READ)
def get_order(db: ShopDB, order_id: OrderId) -> Order:
    """Look up an order: owner, status, items and total."""
    return _order(db, order_id)


@tool(kind=ToolKind.WRITE)
def cancel_order(db: ShopDB, order_id: OrderId, reason: CancelReason) -> Order:
    """Cancel an order with the customer's reason."""
    order = _order(db, order_id)
    if order.status == "cancelled":
        raise ToolError(f"Order {order_id} is already cancelled")
    order.status = "cancelled"
    order.cancel_reason = reason
    return order


@tool(kind=ToolKind.WRITE)
def update_address(
    db: ShopDB,
    user_id: UserId,
    address: Annotated[str, Field(description="The full new street address", min_length=1, max_length=200)],
) -> User:
    """Change the shipping address on a user's account."""
    user = _user(db, user_id)
    user.address = address
    return user


@tool(kind=ToolKind.GENERIC)
def transfer_to_human(db: ShopDB, summary: Annotated[str, Field(max_length=2000)]) -> str:
    """Hand the conversation to a human agent with a summary of the issue."""
    return "Transfer successful"


@tool(kind=ToolKind.READ, side=Side.USER)
def read_emails(mailbox: Mailbox) -> list[Email]:
    """(User side) Read the shop's emails in your own mailbox, e.g. to find an order id."""
    return mailbox.emails


def assert_order_status(state: DomainState, order_id: str, status: OrderStatus) -> bool:
    db = state.db
    assert isinstance(db, ShopDB)
    return order_id in db.orders and db.orders[order_id].status == status


def assert_address(state: DomainState, user_id: str, address: str) -> bool:
    db = state.db
    assert isinstance(db, ShopDB)
    return user_id in db.users and db.users[user_id].address == address


TOOLS: list[Any] = [get_user, get_order, cancel_order, update_address, transfer_to_human, read_emails]
ASSERTIONS = {"assert_order_status": assert_order_status, "assert_address": assert_address}
