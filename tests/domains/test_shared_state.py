"""Sessions never change the state they share: after every built-in task's gold run and all its mutants,
each domain's shared base state still equals a freshly generated one."""

from __future__ import annotations

import pytest

from eigenloop.checkers.mutate import gold_trajectory, mutants, replay
from eigenloop.domains import load_domain, sample_tasks
from eigenloop.domains.base import state_hash
from eigenloop.env.session import _base_state


@pytest.mark.parametrize("name", ["toy", "airline", "retail", "telecom"])
def test_tools_never_write_through_to_the_shared_state(name: str) -> None:
    domain = load_domain(name)
    for task in sample_tasks(name):
        gold = gold_trajectory(task)
        replay(domain, task, gold)
        for mutant in mutants(domain, task, gold):
            replay(domain, task, mutant.trajectory)
    assert state_hash(_base_state(domain, 0).to_dict()) == state_hash(domain.initial_state(0).to_dict())
