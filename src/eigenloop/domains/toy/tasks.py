"""Built-in toy tasks, one per goal type, grounded in the seed-0 shop: used by tests, the demo and benchmarks."""

from __future__ import annotations

import json

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Side
from eigenloop.domains.toy.db import ShopDB, generate_db
from eigenloop.protocol import tool_call


def _first(db: ShopDB, status: str) -> str:
    return next(o.order_id for o in db.orders.values() if o.status == status and db.users[o.user_id].status == "active")


def _mailbox_patch(db: ShopDB, order_id: str) -> str:
    order = db.orders[order_id]
    email = {"subject": f"Your order {order_id}", "body": f"Thanks! Order {order_id}: {', '.join(order.items)}."}
    return json.dumps({"user": {"emails": [email]}})


def sample_tasks(seed: int = 0) -> list[pb.Task]:
    db = generate_db(seed)
    pending, shipped = _first(db, "pending"), _first(db, "shipped")
    delivered = _first(db, "delivered")
    mover = db.orders[pending].user_id
    new_address = "255 Elm Street"
    source = pb.Provenance(source="builtin", seed=seed)
    return [
        pb.Task(
            id="toy-cancel-pending",
            domain="toy",
            description="Cancel a pending order; the reason must map to 'mistake'.",
            user=pb.UserScenario(
                instruction=f"You want to cancel order {pending} because you ordered it by mistake.",
                known_info=f"order id {pending}",
            ),
            checker=pb.Checker(
                gold_actions=[
                    tool_call("get_order", {"order_id": pending}),
                    tool_call("cancel_order", {"order_id": pending, "reason": "mistake"}),
                ],
                reward_basis=[pb.REWARD_COMPONENT_STATE],
            ),
            provenance=source,
        ),
        pb.Task(
            id="toy-refuse-shipped",
            domain="toy",
            description="A shipped order cannot be cancelled: look it up, change nothing, say why.",
            user=pb.UserScenario(
                instruction="You want to cancel the order in your mailbox; you found it cheaper elsewhere.",
                unknown_info="the order id (look it up in your emails)",
            ),
            initial_state=pb.InitialState(data_patch_json=_mailbox_patch(db, shipped)),
            checker=pb.Checker(
                gold_actions=[tool_call("read_emails", side=Side.USER), tool_call("get_order", {"order_id": shipped})],
                required_actions=[
                    pb.ActionMatch(call=tool_call("get_order", {"order_id": shipped}), match=pb.ARGUMENT_MATCH_ALL)
                ],
                forbidden_actions=[pb.ActionMatch(call=tool_call("cancel_order"), match=pb.ARGUMENT_MATCH_NAME_ONLY)],
                communicate_info=["shipped"],
                reward_basis=[pb.REWARD_COMPONENT_STATE, pb.REWARD_COMPONENT_ACTION, pb.REWARD_COMPONENT_COMMUNICATE],
            ),
            provenance=source,
        ),
        pb.Task(
            id="toy-update-address",
            domain="toy",
            description="Copy a free-text address exactly.",
            user=pb.UserScenario(instruction=f"You are user {mover} and moved to {new_address}; update your address."),
            checker=pb.Checker(
                gold_actions=[
                    tool_call("get_user", {"user_id": mover}),
                    tool_call("update_address", {"user_id": mover, "address": new_address}),
                ],
                assertions=[
                    pb.StateAssertion(
                        function="assert_address",
                        arguments_json=json.dumps({"user_id": mover, "address": new_address}),
                        expected_json="true",
                    )
                ],
                reward_basis=[pb.REWARD_COMPONENT_STATE, pb.REWARD_COMPONENT_ASSERTION],
            ),
            provenance=source,
        ),
        pb.Task(
            id="toy-order-status",
            domain="toy",
            description="Report an order's status word.",
            user=pb.UserScenario(instruction=f"You want to know the status of order {delivered}."),
            checker=pb.Checker(
                gold_actions=[tool_call("get_order", {"order_id": delivered})],
                required_actions=[
                    pb.ActionMatch(
                        call=tool_call("get_order", {"order_id": delivered}),
                        match=pb.ARGUMENT_MATCH_LISTED,
                        compare_args=["order_id"],
                    )
                ],
                communicate_info=["delivered"],
                reward_basis=[pb.REWARD_COMPONENT_STATE, pb.REWARD_COMPONENT_ACTION, pb.REWARD_COMPONENT_COMMUNICATE],
            ),
            provenance=source,
        ),
    ]
