"""The domain knowledge the procedural backend writes with: each built-in domain's reference procedure for a goal.

Every built-in domain's `tasks` module knows, goal by goal, the lookups a careful agent makes, the writes the
policy leads to and what must be said (that is how its sample tasks are written). The procedural backend's
dialogue writer starts from that procedure for the scenario its planner drew; what it then keeps or leaves out is
decided by the prompt directives it is given (see eigenloop.llm.procedural_writers). The task modules expose
their builders only privately and each in its own shape, so this module is the one place that adapts them; a
domain without an adapter here cannot be written procedurally (an LLM backend can still write it).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import DomainState, Scenario


class NoReferenceError(LookupError):
    """The procedural backend has no reference procedure for this domain or goal."""


ReferenceWriter = Callable[[Scenario, DomainState, int, random.Random], pb.Task | None]


def _airline(scenario: Scenario, state: DomainState, seed: int, rng: random.Random) -> pb.Task | None:
    from eigenloop.domains.airline import tasks

    build = tasks.BUILDERS.get(scenario.goal)
    if build is None:
        raise NoReferenceError(f"airline has no reference procedure for goal {scenario.goal!r}")
    draft = build(tasks._db(state), scenario, rng.choice(tasks.PERSONAS), rng)
    return None if draft is None else tasks._task(draft, scenario.goal, seed)


def _retail(scenario: Scenario, state: DomainState, seed: int, rng: random.Random) -> pb.Task | None:
    from eigenloop.domains.retail import tasks

    build = tasks.BUILDERS.get(scenario.goal)
    if build is None:
        raise NoReferenceError(f"retail has no reference procedure for goal {scenario.goal!r}")
    db = state.db
    accept = tasks._ACCEPT.get(scenario.goal)
    if accept is not None and not accept(db, scenario):  # type: ignore[arg-type]
        return None
    dialogue = tasks._Dialogue(seed)
    spec = build(tasks._Ctx(db, scenario, rng, dialogue))  # type: ignore[arg-type]
    return tasks._task(scenario.goal, 1, spec, dialogue, rng.choice(tasks.PERSONAS), seed)


def _telecom(scenario: Scenario, state: DomainState, seed: int, rng: random.Random) -> pb.Task | None:
    from eigenloop.domains.telecom import tasks
    from eigenloop.domains.telecom.db import TelecomDB

    if not isinstance(state.db, TelecomDB):
        raise TypeError(f"telecom needs a TelecomDB, got {type(state.db).__name__}")
    return tasks._task(scenario, 1, seed, state.db)


def _toy(scenario: Scenario, state: DomainState, seed: int, rng: random.Random) -> pb.Task | None:
    from eigenloop.domains.toy import tasks

    return tasks.reference_task(scenario, seed, rng)


WRITERS: dict[str, ReferenceWriter] = {"airline": _airline, "retail": _retail, "telecom": _telecom, "toy": _toy}


def reference_task(domain: str, scenario: Scenario, state: DomainState, seed: int, rng: random.Random) -> pb.Task:
    """The domain's reference task for `scenario` in the world of `seed`; NoReferenceError when there is none.

    `state` must be the world's initial state (the builders read it; the dialogues run in their own sessions).
    """
    writer = WRITERS.get(domain.partition("@")[0])
    if writer is None:
        raise NoReferenceError(
            f"the procedural backend cannot write tasks for domain {domain!r} (it knows {', '.join(sorted(WRITERS))}); "
            "use an LLM backend"
        )
    try:
        task = writer(scenario, state, seed, rng)
    except (RuntimeError, KeyError, ValueError, StopIteration) as exc:
        raise NoReferenceError(f"{domain}/{scenario.goal}: the reference procedure failed: {exc}") from None
    if task is None:
        raise NoReferenceError(f"{domain}/{scenario.goal}: no reference dialogue fits these entities")
    return task
