"""`toy`: a tiny shop (users, orders, a user-side mailbox) with one policy rule, for fast tests and the demo."""

from __future__ import annotations

from importlib.resources import files

from eigenloop.domains.base import Domain, DomainState, collect_tools
from eigenloop.domains.toy.db import Mailbox, generate_db
from eigenloop.domains.toy.samplers import SAMPLERS
from eigenloop.domains.toy.tools import ASSERTIONS, TOOLS


def make_state(seed: int = 0) -> DomainState:
    return DomainState(db=generate_db(seed), user=Mailbox())


DOMAIN = Domain(
    name="toy",
    description="A tiny shop: look up users and orders, cancel pending orders, change addresses.",
    policy=(files(__package__) / "policy.md").read_text(),
    make_state=make_state,
    tools=collect_tools(TOOLS),
    assertions=ASSERTIONS,
    samplers=SAMPLERS,
)
