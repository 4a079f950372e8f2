"""`telecom`: mobile-carrier tech support in dual control, after tau2-bench's telecom domain.

The agent works on the company's records (customers, lines, plans, bills, devices); the user works on their
own phone with user-side tools. Both act on one state, kept in step by `sync`.
"""

from __future__ import annotations

from importlib.resources import files

from eigenloop.domains.base import Domain, collect_tools
from eigenloop.domains.telecom.db import generate_state
from eigenloop.domains.telecom.samplers import SAMPLERS
from eigenloop.domains.telecom.tau2 import load_tau2_state
from eigenloop.domains.telecom.tools import ASSERTIONS, SETUP_FUNCTIONS, TOOLS, sync

DOMAIN = Domain(
    name="telecom",
    description=(
        "Mobile-carrier tech support (dual control): the agent looks up customers, lines and bills, manages "
        "suspensions, roaming, payment requests and data refuels; the user fixes their own phone."
    ),
    policy=(files(__package__) / "policy.md").read_text(),
    make_state=generate_state,
    tools=collect_tools(TOOLS),
    assertions=ASSERTIONS,
    setup_functions=SETUP_FUNCTIONS,
    samplers=SAMPLERS,
    sync=sync,
    from_tau2=load_tau2_state,
)

__all__ = ["DOMAIN"]
