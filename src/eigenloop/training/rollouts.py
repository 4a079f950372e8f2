"""Where GRPO's groups come from: live rollouts (the rollout manager) or a trajectory file (offline replay, tests).

A source hands out whole groups (the G trajectories of one task) and is told the policy version being trained,
so a live source can bound how far its rollouts run ahead (bounded staleness). Its cursor goes into checkpoints.
"""

from __future__ import annotations

from typing import Any, Protocol

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import read_jsonl
from eigenloop.training.config import GRPOConfig


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


def open_source(config: GRPOConfig, cursor: dict[str, Any]) -> RolloutSource:
    rollouts = config.rollouts
    if rollouts.source == "file":
        assert rollouts.path is not None  # the config validator guarantees it
        return FileSource(read_jsonl(rollouts.path, pb.Trajectory), int(cursor.get("position", 0)))
    raise NotImplementedError(
        "rollouts.source 'manager' needs the rollout manager (eigenloop.rollout), which is not wired in yet; "
        "use rollouts.source: file, or pass a RolloutSource to run_grpo"
    )
