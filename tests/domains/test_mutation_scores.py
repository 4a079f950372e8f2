"""Every domain's built-in sample tasks: gold replays score 1.0, nothing passes by doing nothing, and the
checkers reject at least 90% of the mutants of the gold trajectories."""

from __future__ import annotations

import pytest

from eigenloop.checkers.mutate import Trajectory, evaluate_trajectory, overall_score, score_task
from eigenloop.domains import load_domain, sample_tasks


@pytest.mark.parametrize("name", ["toy", "airline", "retail", "telecom"])
def test_sample_task_checkers_are_strong(name: str) -> None:
    domain = load_domain(name)
    tasks = sample_tasks(name)
    assert tasks
    reports = [score_task(domain, task) for task in tasks]
    assert all(r.gold_reward == 1.0 for r in reports), [r.task_id for r in reports if r.gold_reward != 1.0]
    assert not [t.id for t in tasks if evaluate_trajectory(domain, t, Trajectory((), ())).value == 1.0]
    assert overall_score(reports) >= 0.9, [(r.task_id, [m.description for m in r.survivors]) for r in reports]
