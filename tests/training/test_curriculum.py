"""Task streams for GRPO: uniform passes and pass-rate weighted families (eigenloop.training.curriculum)."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Side
from eigenloop.domains.toy.tasks import sample_tasks
from eigenloop.protocol import tool_call
from eigenloop.rollout.manager import Group
from eigenloop.training.config import ConfigError, GRPOConfig, parse_config
from eigenloop.training.curriculum import PassRateTasks, UniformTasks, task_family, task_stream
from eigenloop.training.rollouts import ManagerSource


def _task(task_id: str, *calls: str) -> pb.Task:
    return pb.Task(id=task_id, domain="toy", checker=pb.Checker(gold_actions=[tool_call(c) for c in calls]))


# 30 refusals (one lookup) and 10 cancellations (lookup + write): a 3:1 split of the tasks.
TASKS = [_task(f"refuse-{i}", "get_order") for i in range(30)] + [
    _task(f"cancel-{i}", "get_order", "cancel_order") for i in range(10)
]


def _families(tasks: list[pb.Task]) -> collections.Counter[str]:
    return collections.Counter(task_family(t) for t in tasks)


def test_a_family_is_the_agents_gold_tool_sequence() -> None:
    by_id = {t.id: task_family(t) for t in sample_tasks()}
    assert by_id["toy-cancel-pending"] == "get_order>cancel_order"
    assert by_id["toy-refuse-shipped"] == "get_order"  # the user's own read_emails is not the agent's step
    assert by_id["toy-update-address"] == "get_user>update_address"
    assert task_family(_task("t")) == "(no tool call)"
    user_only = pb.Task(id="u", checker=pb.Checker(gold_actions=[tool_call("read_emails", side=Side.USER)]))
    assert task_family(user_only) == "(no tool call)"


def test_uniform_visits_every_task_once_per_pass_and_reshuffles() -> None:
    stream = UniformTasks(TASKS, seed=3)
    first = [next(stream).id for _ in TASKS]
    second = [next(stream).id for _ in TASKS]
    assert sorted(first) == sorted(second) == sorted(t.id for t in TASKS)
    assert first != second


def test_uniform_resumes_from_its_state() -> None:
    stream = UniformTasks(TASKS, seed=3)
    for _ in range(17):
        next(stream)
    resumed = UniformTasks(TASKS, seed=3, state=stream.state())
    assert [next(resumed).id for _ in range(50)] == [next(stream).id for _ in range(50)]


def test_pass_rate_starts_uniform_over_tasks() -> None:
    stream = PassRateTasks(TASKS, seed=0)
    drawn = _families([next(stream) for _ in range(400)])
    assert 0.18 < drawn["get_order>cancel_order"] / 400 < 0.32  # its share of the tasks is 0.25


def test_pass_rate_draws_families_whose_groups_still_differ() -> None:
    stream = PassRateTasks(TASKS, seed=0)
    refuse, cancel = TASKS[0], TASKS[-1]
    for _ in range(10):
        stream.record(refuse, [1.0] * 8)  # always solved: no signal
        stream.record(cancel, [1.0, 0.0] * 4)  # mixed: signal
    weights = stream.weights()
    assert weights["get_order>cancel_order"] > 4 * weights["get_order"]  # though it has a third of the tasks
    drawn = _families([next(stream) for _ in range(400)])
    assert drawn["get_order>cancel_order"] > 280
    assert drawn["get_order"] > 0  # the floor: a solved family is still checked for regressions
    assert stream.state()["pass_rate"]["get_order"] == pytest.approx(1.0)
    assert stream.state()["pass_rate"]["get_order>cancel_order"] == pytest.approx(0.5)


def test_pass_rate_ignores_unknown_tasks_and_empty_groups() -> None:
    stream = PassRateTasks(TASKS, seed=0)
    before = stream.state()
    stream.record(_task("not-in-the-pool", "get_order"), [1.0, 0.0])
    stream.record(TASKS[0], [])  # every episode failed on infrastructure: nothing was scored
    assert stream.state() == before


@settings(max_examples=40, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.integers(0, len(TASKS) - 1), st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=8)),
        max_size=30,
    ),
    draws=st.integers(0, 60),
)
def test_pass_rate_resumes_exactly_from_any_state(records: list[tuple[int, list[float]]], draws: int) -> None:
    stream = PassRateTasks(TASKS, seed=5)
    for _ in range(draws):
        next(stream)
    for index, rewards in records:
        stream.record(TASKS[index], rewards)
    assert all(w > 0 for w in stream.weights().values())
    resumed = PassRateTasks(TASKS, seed=5, state=stream.state())
    assert [next(resumed).id for _ in range(40)] == [next(stream).id for _ in range(40)]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="no task"):
        PassRateTasks([], seed=0)
    with pytest.raises(ValueError, match="no task"):
        UniformTasks([], seed=0)
    with pytest.raises(ValueError, match="floor"):
        PassRateTasks(TASKS, seed=0, floor=0.0)
    with pytest.raises(ValueError, match="unknown task sampling"):
        task_stream("hardest-first", TASKS, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="task_sampling"):
        parse_config(GRPOConfig, {"run_dir": "r", "model": {"path": "m"}, "rollouts": {"task_sampling": "greedy"}})


class _FakeManager:
    """Plays every group instantly: tasks whose id starts with 'cancel' get mixed rewards, others all 1."""

    def __init__(self) -> None:
        self.version = 0

    def set_policy_version(self, version: int) -> None:
        self.version = version

    def rollout(self, tasks: Iterator[pb.Task]) -> Iterator[Group]:
        for n, task in enumerate(tasks):
            rewards = [1.0, 0.0, 1.0, 0.0] if task.id.startswith("cancel") else [1.0] * 4
            trajectories = [
                pb.Trajectory(
                    task_id=task.id,
                    group_id=f"g{n}",
                    status=pb.EPISODE_STATUS_COMPLETED,
                    reward=pb.Reward(value=r),
                )
                for r in rewards
            ]
            infra = pb.Trajectory(task_id=task.id, group_id=f"g{n}", status=pb.EPISODE_STATUS_INFRA_FAILED)
            yield Group(task=task, group_id=f"g{n}", trajectories=[*trajectories, infra])


def test_manager_source_reports_each_groups_rewards_to_the_stream() -> None:
    stream = PassRateTasks(TASKS, seed=0)
    source = ManagerSource(_FakeManager(), stream)
    for step in range(10):
        groups = source.groups(4, step)
        assert all(len(g) == 5 for g in groups)  # the trainer still sees the infrastructure failure
    state = source.cursor()
    assert state["delivered"] == 40
    assert state["tasks"]["pass_rate"]["get_order"] == pytest.approx(1.0)  # the failed episode was not scored
    assert state["tasks"]["mixed"]["get_order"] < 0.1 < state["tasks"]["mixed"]["get_order>cancel_order"]
    drawn = state["tasks"]["draws"]
    assert drawn["get_order>cancel_order"] > drawn["get_order"]  # 10 of the 40 tasks, drawn more than the 30
