"""`airline`: tau2-bench's airline customer service (flights, users, reservations) as an eigenloop domain.

Same DB shape, tool names, arguments and effects as tau2's airline domain, a seeded generator for fresh
worlds, scenario samplers for the task generator, and a loader for tau2's own db.json.
"""

from __future__ import annotations

from importlib.resources import files

from eigenloop.domains.airline.assertions import ASSERTIONS
from eigenloop.domains.airline.db import generate_db
from eigenloop.domains.airline.samplers import SAMPLERS
from eigenloop.domains.airline.tau2 import load_tau2_state
from eigenloop.domains.airline.tools import TOOLS
from eigenloop.domains.base import Domain, DomainState, collect_tools


def make_state(seed: int = 0) -> DomainState:
    return DomainState(db=generate_db(seed), user=None)


DOMAIN = Domain(
    name="airline",
    description=(
        "Airline customer service: look up users, reservations and flights, search and book flights, change "
        "flights, cabin, bags and passengers, cancel reservations and send compensation certificates."
    ),
    policy=(files(__package__) / "policy.md").read_text(),
    make_state=make_state,
    tools=collect_tools(TOOLS),
    assertions=ASSERTIONS,
    # tau2's airline tasks have no initial_state: every task starts from the same DB, so no setup functions.
    setup_functions={},
    samplers=SAMPLERS,
    from_tau2=load_tau2_state,
)
