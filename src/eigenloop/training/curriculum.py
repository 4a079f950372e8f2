"""Which task GRPO rolls out next: uniformly, or weighted by what a group on it can still teach.

A GRPO group teaches only when its rewards differ. A family of tasks the policy always solves (or always fails)
gives zero-variance groups, which dynamic filtering drops after their rollouts were paid for. `PassRateTasks`
draws a family in proportion to its share of the tasks times how often its recent groups had mixed rewards (an
exponential moving average that starts at 1, so the first draws are uniform), plus a floor, so a solved family
is still rolled out now and then and a regression shows. A family is the agent's gold tool sequence
(`get_order>cancel_order`): tasks that need the same decisions and arguments.

Both streams are deterministic given their state, which goes into GRPO checkpoints (`state()`, given back to the
constructor on resume).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Protocol

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Side
from eigenloop.protocol import side_from_pb

TaskSampling = Literal["uniform", "pass_rate"]


class TaskStream(Protocol):
    """Tasks to roll out, endlessly; told each finished group's rewards."""

    def __iter__(self) -> Iterator[pb.Task]: ...

    def __next__(self) -> pb.Task: ...

    def record(self, task: pb.Task, rewards: Sequence[float]) -> None: ...

    def state(self) -> dict[str, Any]: ...


def task_family(task: pb.Task) -> str:
    """The agent's gold tool calls by name, in order: tasks that ask the agent for the same steps."""
    names = [c.name for c in task.checker.gold_actions if side_from_pb(c.side) is Side.AGENT]
    return ">".join(names) or "(no tool call)"


class _Passes:
    """`tasks` in a seeded order, reshuffled every pass; the current pass's order is kept."""

    def __init__(self, tasks: Sequence[pb.Task], seed: str) -> None:
        self._tasks = list(tasks)
        self._seed = seed
        self._epoch = -1
        self._order: list[pb.Task] = []

    def at(self, position: int) -> pb.Task:
        epoch, index = divmod(position, len(self._tasks))
        if epoch != self._epoch:
            self._order = list(self._tasks)
            random.Random(f"{self._seed}:{epoch}").shuffle(self._order)
            self._epoch = epoch
        return self._order[index]


class UniformTasks:
    """Every task once per pass, in a seeded order reshuffled every pass."""

    def __init__(self, tasks: Sequence[pb.Task], seed: int, state: dict[str, Any] | None = None) -> None:
        if not tasks:
            raise ValueError("no task to roll out")
        self._pass = _Passes(tasks, str(seed))
        self.drawn = int((state or {}).get("drawn", 0))
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[pb.Task]:
        return self

    def __next__(self) -> pb.Task:
        with self._lock:
            self.drawn += 1
            return self._pass.at(self.drawn - 1)

    def record(self, task: pb.Task, rewards: Sequence[float]) -> None:
        pass

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"drawn": self.drawn}


class PassRateTasks:
    """Families drawn by share x (floor + recent fraction of groups with mixed rewards); tasks within a family in
    a seeded order reshuffled every pass. `decay` is how much of its old value the average keeps per group."""

    def __init__(
        self,
        tasks: Sequence[pb.Task],
        seed: int,
        state: dict[str, Any] | None = None,
        *,
        floor: float = 0.05,
        decay: float = 0.7,
    ) -> None:
        if not tasks:
            raise ValueError("no task to roll out")
        if not 0.0 < floor <= 1.0 or not 0.0 <= decay < 1.0:
            raise ValueError(f"floor must be in (0, 1] and decay in [0, 1), got floor={floor}, decay={decay}")
        self._families: dict[str, list[pb.Task]] = {}
        for task in tasks:
            self._families.setdefault(task_family(task), []).append(task)
        self._family_of = {task.id: family for family, members in self._families.items() for task in members}
        self._passes = {f: _Passes(members, f"{seed}:{f}") for f, members in self._families.items()}
        self._seed = seed
        self._floor, self._decay = floor, decay
        self._lock = threading.Lock()
        state = state or {}
        self.mixed: dict[str, float] = {f: float(state.get("mixed", {}).get(f, 1.0)) for f in self._families}
        self.pass_rate: dict[str, float | None] = {f: state.get("pass_rate", {}).get(f) for f in self._families}
        self.draws: dict[str, int] = {f: int(state.get("draws", {}).get(f, 0)) for f in self._families}
        """Tasks drawn from each family so far: also where the family's pass order goes on."""

    def __iter__(self) -> Iterator[pb.Task]:
        return self

    def weights(self) -> dict[str, float]:
        total = sum(len(m) for m in self._families.values())
        with self._lock:
            return {f: len(m) / total * (self._floor + self.mixed[f]) for f, m in self._families.items()}

    def __next__(self) -> pb.Task:
        weights = self.weights()
        with self._lock:
            rng = random.Random(f"{self._seed}:draw:{sum(self.draws.values())}")
            family = rng.choices(sorted(weights), [weights[f] for f in sorted(weights)])[0]
            self.draws[family] += 1
            return self._passes[family].at(self.draws[family] - 1)

    def record(self, task: pb.Task, rewards: Sequence[float]) -> None:
        family = self._family_of.get(task.id)
        if family is None or not rewards:
            return
        passed = sum(r >= 1.0 for r in rewards) / len(rewards)
        with self._lock:
            mixed = float(len(set(rewards)) > 1)
            self.mixed[family] = self._decay * self.mixed[family] + (1 - self._decay) * mixed
            old = self.pass_rate[family]
            self.pass_rate[family] = passed if old is None else self._decay * old + (1 - self._decay) * passed

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"mixed": dict(self.mixed), "pass_rate": dict(self.pass_rate), "draws": dict(self.draws)}


def task_stream(
    sampling: TaskSampling, tasks: Sequence[pb.Task], seed: int, state: dict[str, Any] | None = None
) -> TaskStream:
    if sampling == "uniform":
        return UniformTasks(tasks, seed, state)
    if sampling == "pass_rate":
        return PassRateTasks(tasks, seed, state)
    raise ValueError(f"unknown task sampling {sampling!r}; choose uniform or pass_rate")
