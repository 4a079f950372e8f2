"""Where GRPO's groups come from: live rollouts (the rollout manager) or a trajectory file (offline replay, tests).

A source hands out whole groups (the G trajectories of one task) and is told the policy version being trained,
so a live source can bound how far its rollouts run ahead (bounded staleness). Its cursor goes into checkpoints.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from transformers import AutoTokenizer

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import read_jsonl
from eigenloop.training.config import GRPOConfig
from eigenloop.training.curriculum import TaskStream, task_stream
from eigenloop.training.data import EmptyDatasetError, load_tasks
from eigenloop.training.sync import EngineSync, WeightSync


class RolloutSource(Protocol):
    def groups(self, count: int, policy_version: int) -> list[list[pb.Trajectory]]:
        """The next `count` complete groups; blocks until they are there."""
        ...

    def cursor(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class FileSource:
    """Groups read from a trajectory JSONL (grouped by group_id, in file order), cycled endlessly."""

    def __init__(self, trajectories: list[pb.Trajectory], position: int = 0) -> None:
        grouped: dict[str, list[pb.Trajectory]] = {}
        for t in trajectories:
            grouped.setdefault(t.group_id or t.task_id, []).append(t)
        if not grouped:
            raise ValueError("the trajectory file holds no trajectory")
        self._groups = list(grouped.values())
        self.position = position

    def groups(self, count: int, policy_version: int) -> list[list[pb.Trajectory]]:
        out = []
        for _ in range(count):
            out.append(self._groups[self.position % len(self._groups)])
            self.position += 1
        return out

    def cursor(self) -> dict[str, Any]:
        return {"position": self.position}

    def close(self) -> None:
        pass


class ManagerSource:
    """Groups from a live rollout manager (eigenloop.rollout.manager), as they complete.

    The manager plays ahead of the trainer (overlapping rollouts with training) by at most its `max_ready_groups`;
    being told the trained policy version is what lets it measure (and drop) stale groups. Each delivered group's
    rewards go back to the task stream, which may weigh what it draws next by them (eigenloop.training.curriculum).
    """

    def __init__(self, manager: Any, tasks: TaskStream, delivered: int = 0, closer: Any = None) -> None:
        self.manager = manager
        self.tasks = tasks
        self.delivered = delivered
        self._groups = manager.rollout(tasks)
        self._closer = closer

    def groups(self, count: int, policy_version: int) -> list[list[pb.Trajectory]]:
        self.manager.set_policy_version(policy_version)
        out = []
        for _ in range(count):
            group = next(self._groups)
            self.tasks.record(group.task, [t.reward.value for t in group.scored])
            out.append(list(group.trajectories))
            self.delivered += 1
        return out

    def cursor(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "tasks": self.tasks.state()}

    def close(self) -> None:
        self._groups.close()
        if self._closer is not None:
            self._closer.close()


def open_source(
    config: GRPOConfig, cursor: dict[str, Any], *, model: Any, policy_version: int
) -> tuple[RolloutSource, WeightSync | None]:
    """The configured source, and the weight sync it brings: live rollouts without `rollouts.inference` sample from
    an engine in this process (embedded mode), which the returned EngineSync keeps on the trained weights; it
    starts from `model` at `policy_version` (a resumed run's weights, not the initial ones)."""
    rollouts = config.rollouts
    if rollouts.source == "file":
        assert rollouts.path is not None  # the config validator guarantees it
        return FileSource(read_jsonl(rollouts.path, pb.Trajectory), int(cursor.get("position", 0))), None
    from eigenloop.inference.engine import TransformersEngine
    from eigenloop.rollout.episode import EpisodeConfig
    from eigenloop.rollout.manager import RolloutConfig, RolloutManager
    from eigenloop.rollout.policy import LocalPolicy, PolicyClient, RemotePolicy
    from eigenloop.rollout.services import (
        Environments,
        LocalEnvironments,
        LocalUsers,
        RemoteEnvironments,
        RemoteUsers,
        Users,
    )
    from eigenloop.usersim.policies import ProceduralUser

    assert config.model.path is not None  # run_grpo checked it
    tasks, _ = load_tasks(config.data)
    if not tasks:
        raise EmptyDatasetError("rollouts.source 'manager' needs tasks: set data.tasks or data.domains")
    manager_config = RolloutConfig(
        group_size=rollouts.group_size,
        max_ready_groups=rollouts.max_inflight_groups,
        max_staleness=config.filter.max_staleness,
        seed=config.seed,
        episode=EpisodeConfig(
            max_turns=rollouts.max_turns,
            max_tokens=config.data.max_length,
            max_new_tokens=rollouts.max_new_tokens,
            temperature=rollouts.temperature,
            system_prompt=config.data.system_prompt,
            tools_in_prompt=config.data.tools_in_prompt,
        ),
    )
    stack = contextlib.ExitStack()
    sync: WeightSync | None = None
    policy: PolicyClient
    if rollouts.inference is None:
        engine = TransformersEngine(config.model.path, max_batch_size=rollouts.tasks_per_step * rollouts.group_size)
        stack.callback(engine.close)
        sync = EngineSync(engine)
        if policy_version > 0:
            sync.push(model, policy_version)
        policy, tokenizer = LocalPolicy(engine), engine.tokenizer
    else:
        remote = RemotePolicy(rollouts.inference)
        stack.callback(remote.close)
        policy, tokenizer = remote, AutoTokenizer.from_pretrained(config.model.path)
    environments: Environments = LocalEnvironments()
    if rollouts.toolenv is not None:
        environments = RemoteEnvironments(rollouts.toolenv)
        stack.callback(environments.close)
    users: Users = LocalUsers(ProceduralUser())
    if rollouts.user_sim is not None:
        users = RemoteUsers(rollouts.user_sim)
        stack.callback(users.close)
    manager = stack.enter_context(RolloutManager(policy, environments, users, tokenizer, manager_config))
    stream = task_stream(rollouts.task_sampling, tasks, config.seed, cursor.get("tasks"))
    return ManagerSource(manager, stream, int(cursor.get("delivered", 0)), closer=stack), sync
