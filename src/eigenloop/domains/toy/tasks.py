"""Built-in toy tasks, one per goal type, grounded in the seed-0 shop: used by tests, the demo and benchmarks."""

from __future__ import annotations

import json
import random

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Scenario, Side
from eigenloop.domains.toy.db import ShopDB, generate_db
from eigenloop.protocol import assistant_calls, text_message, tool_call
from eigenloop.usersim.validity import STOP_TOKEN


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


# -- reference procedures for generated scenarios (the procedural task writer, eigenloop.synthesis.reference) ---

# How a customer words each cancellation reason; the agent maps the words to the enum value.
REASON_WORDS = {
    "mistake": ["I ordered it by mistake", "I bought it by accident"],
    "no_longer_needed": ["I no longer need it", "I don't need it anymore"],
    "found_cheaper": ["I found it cheaper elsewhere", "another shop sells it for less"],
}
CLOSINGS = ["Thanks, bye!", "Great, thank you.", "OK, thanks."]


def _closing(rng: random.Random) -> pb.Message:
    return text_message(pb.ROLE_USER, f"{rng.choice(CLOSINGS)} {STOP_TOKEN}")


def _lookup(call: pb.ToolCall) -> pb.Message:
    return assistant_calls(call)


def reference_task(scenario: Scenario, seed: int, rng: random.Random) -> pb.Task:
    """The careful agent's dialogue for a sampled scenario (see samplers.py): the customer states the request
    with its id, the agent looks the entity up, acts or refuses by the policy, and says what happened."""
    e = scenario.entities
    goal = scenario.goal
    if goal == "cancel_order":
        order_id, words = e["order_id"], rng.choice(REASON_WORDS[e["reason"]])
        opening = rng.choice(
            [f"Please cancel order {order_id}, {words}.", f"I want to cancel {order_id} because {words}."]
        )
        instruction = f"You want to cancel an order because {words}."
        known = f"order id {order_id}"
        lookup = tool_call("get_order", {"order_id": order_id})
        if scenario.allowed:
            write = tool_call("cancel_order", {"order_id": order_id, "reason": e["reason"]})
            actions, reply = [lookup, write], f"Order {order_id} is now cancelled."
        else:
            actions, reply = [lookup], f"Sorry, order {order_id} is {e['status']}, so it cannot be cancelled."
        communicate = [] if scenario.allowed else [e["status"]]
        assertions = [
            ("assert_order_status", {"order_id": order_id, "status": "cancelled" if scenario.allowed else e["status"]})
        ]
    elif goal == "update_address":
        user_id, address = e["user_id"], e["address"]
        opening = rng.choice(
            [
                f"I am user {user_id}. Please change my address to {address}.",
                f"Hi, {user_id} here. I moved to {address}.",
            ]
        )
        instruction = f"You moved to {address} and want your address updated."
        known = f"user id {user_id}"
        lookup = tool_call("get_user", {"user_id": user_id})
        if scenario.allowed:
            write = tool_call("update_address", {"user_id": user_id, "address": address})
            actions, reply = [lookup, write], f"Your address is now {address}."
            assertions = [("assert_address", {"user_id": user_id, "address": address})]
        else:
            actions, reply = [lookup], "Sorry, your account is suspended, so I cannot change the address."
            assertions = []
        communicate = [] if scenario.allowed else ["suspended"]
    elif goal == "order_status":
        order_id = e["order_id"]
        opening = rng.choice([f"What is the status of order {order_id}?", f"Where is my order {order_id}?"])
        instruction = "You want to know the status of your order."
        known = f"order id {order_id}"
        actions, reply = [tool_call("get_order", {"order_id": order_id})], f"Order {order_id} is {e['status']}."
        communicate, assertions = [e["status"]], []
    else:
        raise KeyError(f"toy has no reference procedure for goal {goal!r}")
    dialogue = [text_message(pb.ROLE_USER, opening), *(_lookup(c) for c in actions)]
    dialogue += [text_message(pb.ROLE_ASSISTANT, reply), _closing(rng)]
    writes = {c.name for c in actions} & {"cancel_order", "update_address"}
    forbidden = [
        pb.ActionMatch(call=tool_call(name), match=pb.ARGUMENT_MATCH_NAME_ONLY)
        for name in ("cancel_order", "update_address")
        if name not in writes
    ]
    basis = [pb.REWARD_COMPONENT_STATE, pb.REWARD_COMPONENT_ACTION]
    if communicate:
        basis.append(pb.REWARD_COMPONENT_COMMUNICATE)
    if assertions:
        basis.append(pb.REWARD_COMPONENT_ASSERTION)
    return pb.Task(
        id=f"toy-{goal}",
        domain="toy",
        description=f"{goal} ({'allowed' if scenario.allowed else 'refused'}: {scenario.policy_rule})",
        user=pb.UserScenario(instruction=instruction, known_info=known),
        reference_dialogue=dialogue,
        checker=pb.Checker(
            gold_actions=actions,
            required_actions=[pb.ActionMatch(call=actions[0], match=pb.ARGUMENT_MATCH_ALL)],
            forbidden_actions=forbidden,
            communicate_info=communicate,
            assertions=[
                pb.StateAssertion(function=f, arguments_json=json.dumps(a), expected_json="true") for f, a in assertions
            ],
            reward_basis=basis,
        ),
        provenance=pb.Provenance(source="builtin", seed=seed, backend="procedural"),
    )
