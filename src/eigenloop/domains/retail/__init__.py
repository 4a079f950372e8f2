"""`retail`: an online store (products with variants, users with payment methods, orders), modelled on
tau2-bench's retail domain: cancel or modify pending orders, return or exchange delivered ones."""

from __future__ import annotations

from importlib.resources import files

from eigenloop.domains.base import Domain, DomainState, collect_tools
from eigenloop.domains.retail.db import generate_db
from eigenloop.domains.retail.samplers import SAMPLERS
from eigenloop.domains.retail.tau2 import load_tau2_state
from eigenloop.domains.retail.tools import ASSERTIONS, TOOLS


def make_state(seed: int = 0) -> DomainState:
    return DomainState(generate_db(seed))


DOMAIN = Domain(
    name="retail",
    description=(
        "An online store: identify the user, look up orders and products, cancel or modify pending orders "
        "(address, payment, item options), request returns or exchanges of delivered orders, change addresses."
    ),
    policy=(files(__package__) / "policy.md").read_text(),
    make_state=make_state,
    tools=collect_tools(TOOLS),
    assertions=ASSERTIONS,
    samplers=dict(SAMPLERS),
    from_tau2=load_tau2_state,
)
