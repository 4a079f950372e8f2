"""pass@1 and pass^k per domain from rollout groups (k samples per task), as in tau2-bench.

A sample succeeds when its reward is 1. pass@1 is the mean success rate over tasks; pass^k is, per task,
C(c, k) / C(n, k) for c successes among n scored samples (with n = k: all k succeed), averaged over tasks.
Only scored samples count (COMPLETED, TRUNCATED): infrastructure failures and simulator-invalid episodes are
reported, never scored as failures. A task with fewer than k scored samples has no pass^k (counted as short).
Failed scored samples are counted by how they failed and by kind of mistake (eigenloop.checkers.diagnose).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from math import comb

from pydantic import BaseModel

from eigenloop.checkers.diagnose import MISTAKE_KINDS, count_failures, count_mistakes
from eigenloop.checkers.evaluate import passed
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import load_domain
from eigenloop.rollout.manager import Group


class DomainScore(BaseModel):
    domain: str
    tasks: int
    episodes: int
    pass_at_1: float | None
    pass_hat_k: float | None
    mean_reward: float | None
    completed: int
    truncated: int
    infra_failed: int
    simulator_invalid: int
    short_tasks: int
    """Tasks with fewer than k scored samples (left out of pass^k)."""
    format_errors: int
    failures: dict[str, int]
    """Failed scored episodes by where they first departed from their task (eigenloop.checkers.diagnose)."""
    mistakes: dict[str, int]
    """The same episodes by kind of mistake: wrong value, wrong choice, ... (diagnose.mistake_kind)."""


class EvalReport(BaseModel):
    k: int
    domains: list[DomainScore]
    overall: DomainScore


def _score(domain: str, groups: list[Group], k: int) -> DomainScore:
    failures, mistakes = _diagnoses(groups)
    statuses: dict[int, int] = defaultdict(int)
    pass1: list[float] = []
    passk: list[float] = []
    rewards: list[float] = []
    short = format_errors = 0
    for group in groups:
        for t in group.trajectories:
            statuses[t.status] += 1
            format_errors += t.format_errors
        scored = group.scored
        rewards.extend(t.reward.value for t in scored)
        successes = sum(map(passed, scored))
        if scored:
            pass1.append(successes / len(scored))
        if len(scored) >= k:
            passk.append(comb(successes, k) / comb(len(scored), k))
        else:
            short += 1
    return DomainScore(
        domain=domain,
        tasks=len(groups),
        episodes=sum(statuses.values()),
        pass_at_1=sum(pass1) / len(pass1) if pass1 else None,
        pass_hat_k=sum(passk) / len(passk) if passk else None,
        mean_reward=sum(rewards) / len(rewards) if rewards else None,
        completed=statuses[pb.EPISODE_STATUS_COMPLETED],
        truncated=statuses[pb.EPISODE_STATUS_TRUNCATED],
        infra_failed=statuses[pb.EPISODE_STATUS_INFRA_FAILED],
        simulator_invalid=statuses[pb.EPISODE_STATUS_SIMULATOR_INVALID],
        short_tasks=short,
        format_errors=format_errors,
        failures=failures,
        mistakes=mistakes,
    )


def _diagnoses(groups: list[Group]) -> tuple[dict[str, int], dict[str, int]]:
    """The failed scored episodes by how they failed (most frequent first) and by kind of mistake, each task's
    failures judged once, by its own domain's tool schemas."""
    by_domain: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        by_domain[group.task.domain].append(group)
    failures: Counter[str] = Counter()
    mistakes: Counter[str] = Counter()
    for name, own in by_domain.items():
        counts = count_failures((g.task, t) for g in own for t in g.scored)
        failures.update(counts)
        mistakes.update(count_mistakes(load_domain(name), counts))
    return dict(failures.most_common()), {kind: mistakes[kind] for kind in MISTAKE_KINDS if mistakes[kind]}


def score_groups(groups: Iterable[Group], k: int) -> EvalReport:
    """Per-domain and overall scores of groups of k samples each."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    by_domain: dict[str, list[Group]] = defaultdict(list)
    everything: list[Group] = []
    for group in groups:
        by_domain[group.task.domain].append(group)
        everything.append(group)
    return EvalReport(
        k=k,
        domains=[_score(d, gs, k) for d, gs in sorted(by_domain.items())],
        overall=_score("all", everything, k),
    )
