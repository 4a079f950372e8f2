"""Evaluation on held-out tasks with the rollout manager: pass@1 greedy, pass@1 sampled at temperature 1
(the mean over k samples per task), pass^k (every one of the k samples passes), pass@1 per task goal, and how the
failed episodes failed.

A task passes when the checker's reward is 1. Episodes the infrastructure dropped are left out of the means
(and counted); episodes where the simulated user broke its rules are scored like any other.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eigenloop.checkers.diagnose import count_failures
from eigenloop.checkers.evaluate import passed
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import write_jsonl
from eigenloop.quickstart.config import QuickstartConfig
from eigenloop.quickstart.train import rollout_manager

OnEpisode = Callable[[int], None]


@dataclass(frozen=True)
class EvalResult:
    greedy_pass1: float
    sampled_pass1: float
    pass_hat_k: float
    k: int
    tasks: int
    episodes: int
    infra_dropped: int
    by_goal: dict[str, float]
    """Greedy pass@1 per goal (what the task's description starts with)."""
    greedy_failures: dict[str, int]
    sampled_failures: dict[str, int]
    """Failed episodes by how they failed (eigenloop.checkers.diagnose), most frequent first."""

    def as_percent(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("greedy_pass1", "sampled_pass1", "pass_hat_k"):
            values[key] = round(100 * values[key], 2)
        values["by_goal"] = {g: round(100 * v, 2) for g, v in self.by_goal.items()}
        return values


_GOAL = re.compile(r"^(\w+)(?: \((\w+))?")


def goal_of(task: pb.Task) -> str:
    """The task type: "cancel_order refused" from "cancel_order (refused: ...)"; else the first word."""
    found = _GOAL.match(task.description)
    return " ".join(g for g in found.groups() if g) if found else "other"


def scores(groups: Sequence[tuple[pb.Task, list[pb.Trajectory]]]) -> tuple[list[list[bool]], int]:
    """Per task, the pass/fail of each scored sample; and how many episodes infrastructure dropped."""
    out, dropped = [], 0
    for _, trajectories in groups:
        scored = [t for t in trajectories if t.status != pb.EPISODE_STATUS_INFRA_FAILED]
        dropped += len(trajectories) - len(scored)
        out.append([passed(t) for t in scored])
    return out, dropped


def summarize(
    greedy: Sequence[tuple[pb.Task, list[pb.Trajectory]]],
    sampled: Sequence[tuple[pb.Task, list[pb.Trajectory]]],
    k: int,
) -> EvalResult:
    greedy_scores, dropped_g = scores(greedy)
    sampled_scores, dropped_s = scores(sampled)
    by_goal: dict[str, list[bool]] = defaultdict(list)
    for (task, _), s in zip(greedy, greedy_scores, strict=True):
        by_goal[goal_of(task)].extend(s)
    flat_g = [x for s in greedy_scores for x in s]
    flat_s = [x for s in sampled_scores for x in s]
    return EvalResult(
        greedy_pass1=statistics.fmean(flat_g) if flat_g else 0.0,
        sampled_pass1=statistics.fmean(flat_s) if flat_s else 0.0,
        pass_hat_k=statistics.fmean(len(s) == k and all(s) for s in sampled_scores) if sampled_scores else 0.0,
        k=k,
        tasks=len(greedy),
        episodes=len(flat_g) + len(flat_s),
        infra_dropped=dropped_g + dropped_s,
        by_goal={g: statistics.fmean(v) for g, v in sorted(by_goal.items()) if v},
        greedy_failures=_failures(greedy),
        sampled_failures=_failures(sampled),
    )


def _failures(groups: Sequence[tuple[pb.Task, list[pb.Trajectory]]]) -> dict[str, int]:
    return count_failures((task, t) for task, trajectories in groups for t in trajectories)


def play(
    config: QuickstartConfig,
    addresses: dict[str, str],
    tokenizer: Any,
    tasks: list[pb.Task],
    *,
    samples: int,
    temperature: float,
    on_episode: OnEpisode,
) -> list[tuple[pb.Task, list[pb.Trajectory]]]:
    by_id = {t.id: t for t in tasks}
    results: dict[str, list[pb.Trajectory]] = {}
    with rollout_manager(
        addresses, tokenizer, group_size=samples, temperature=temperature, config=config, ahead=len(tasks)
    ) as manager:
        for group in manager.rollout(tasks):
            results[group.task.id] = group.trajectories
            on_episode(len(group.trajectories))
    return [(by_id[t.id], results[t.id]) for t in tasks]


def evaluate(
    config: QuickstartConfig,
    addresses: dict[str, str],
    tokenizer: Any,
    tasks: list[pb.Task],
    out: Path,
    on_episode: OnEpisode,
) -> EvalResult:
    """Greedy then sampled episodes on `tasks` with the policy inference serves now; trajectories kept in `out`."""
    greedy = play(config, addresses, tokenizer, tasks, samples=1, temperature=0.0, on_episode=on_episode)
    k = config.eval.samples
    sampled = play(config, addresses, tokenizer, tasks, samples=k, temperature=1.0, on_episode=on_episode)
    write_jsonl(out / "greedy.jsonl", [t for _, ts in greedy for t in ts])
    write_jsonl(out / "sampled.jsonl", [t for _, ts in sampled for t in ts])
    return summarize(greedy, sampled, k)
