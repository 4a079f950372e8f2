"""The rollout manager: many episodes in flight, G samples per task, groups handed over as they complete.

Consumer API (what the trainer's GRPO and `eigenloop eval` use)::

    manager = RolloutManager(policy, environments, users, tokenizer, RolloutConfig(group_size=8))
    for group in manager.rollout(tasks):        # or: async for group in manager.arollout(tasks)
        group.trajectories                      # all G, by sample_index
        group.scored                            # those a trainer may learn from (COMPLETED / TRUNCATED)
        ...train...
        manager.set_policy_version(step)        # after pushing new weights to inference
    manager.stats                               # RolloutStats: episodes, retries, drops, stale groups, ...
    manager.close()

`policy` is a `PolicyClient` (LocalPolicy over an in-process engine, or RemotePolicy over inference replicas);
`environments` / `users` are LocalEnvironments / LocalUsers or RemoteEnvironments / RemoteUsers (rollout.services),
so the same manager runs embedded or distributed. `tasks` may be endless: episodes keep running in the background
(up to `max_in_flight` at once, and no new group while `max_ready_groups` wait for the consumer), so rollouts
overlap with training.

Failures: an InfraError (broken stream, unavailable replica, a service's deadline) fails that attempt; the episode
is retried from scratch on other replicas up to `max_attempts`, then kept in its group with status INFRA_FAILED,
no reward and the cause in `termination` (counted in `stats.dropped`); it is never scored as 0. Any other error
(a bug, a chat template that cannot be applied incrementally) stops the rollout and is raised to the consumer.

Staleness: every policy turn carries the policy version that sampled it (TokenTrace.turns). With `max_staleness`
K set, a group whose oldest turn is more than K versions behind the current one (the larger of what
`set_policy_version` said and what inference reported) is dropped, or with `on_stale="rerun"` played again with
the current policy; either way it is counted and never delivered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.rollout.episode import EpisodeConfig, run_episode
from eigenloop.rollout.failures import InfraError
from eigenloop.rollout.policy import PolicyClient
from eigenloop.rollout.services import Environments, EnvironmentSession, Users, UserSession

log = logging.getLogger(__name__)

EPISODES = Counter("eigenloop_rollout_episodes_total", "Finished episodes by final status.", ["status"])
ATTEMPT_FAILURES = Counter(
    "eigenloop_rollout_attempt_failures_total", "Episode attempts that failed on infrastructure.", ["service"]
)
GROUPS = Counter("eigenloop_rollout_groups_total", "Groups by outcome.", ["outcome"])
FORMAT_ERRORS = Counter("eigenloop_rollout_format_errors_total", "Policy turns with malformed tool calls.")
IN_FLIGHT = Gauge("eigenloop_rollout_episodes_in_flight", "Episodes running now.")
EPISODE_SECONDS = Histogram(
    "eigenloop_rollout_episode_seconds",
    "Wall time of one episode attempt, open to evaluation.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)

SCORED = (pb.EPISODE_STATUS_COMPLETED, pb.EPISODE_STATUS_TRUNCATED)


class RolloutConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    group_size: int = Field(default=8, ge=1, description="samples per task (G)")
    max_in_flight: int = Field(default=32, ge=1, description="episodes running at once")
    max_ready_groups: int = Field(
        default=64, ge=1, description="completed groups waiting for the consumer before pausing"
    )
    max_attempts: int = Field(default=3, ge=1, description="tries per episode when infrastructure fails")
    max_staleness: int | None = Field(
        default=None, ge=0, description="K: groups with turns older than K versions are stale"
    )
    on_stale: Literal["drop", "rerun"] = "drop"
    seed: int = 0
    episode: EpisodeConfig = EpisodeConfig()


@dataclass
class Group:
    task: pb.Task
    group_id: str
    trajectories: list[pb.Trajectory]
    """All G samples by sample_index; infrastructure-failed ones have status INFRA_FAILED and no reward."""

    @property
    def scored(self) -> list[pb.Trajectory]:
        return [t for t in self.trajectories if t.status in SCORED]

    @property
    def oldest_policy_version(self) -> int | None:
        versions = [turn.policy_version for t in self.trajectories for turn in t.tokens.turns]
        return min(versions) if versions else None


@dataclass
class RolloutStats:
    episodes: int = 0
    """Episodes finished (each counted once, whatever its attempts)."""
    completed: int = 0
    truncated: int = 0
    simulator_invalid: int = 0
    dropped: int = 0
    """Episodes that failed on infrastructure on every attempt."""
    failed_attempts: int = 0
    format_errors: int = 0
    groups: int = 0
    """Groups delivered."""
    stale_dropped: int = 0
    stale_rerun: int = 0


_DONE = object()


@dataclass
class _PendingGroup:
    task: pb.Task
    group_id: str
    seed: int
    trajectories: list[pb.Trajectory | None]
    left: int = field(init=False)

    def __post_init__(self) -> None:
        self.left = len(self.trajectories)


class RolloutManager:
    def __init__(
        self,
        policy: PolicyClient,
        environments: Environments,
        users: Users,
        tokenizer: Any,
        config: RolloutConfig | None = None,
    ) -> None:
        self.policy = policy
        self.environments = environments
        self.users = users
        self.tokenizer = tokenizer
        self.config = config or RolloutConfig()
        self._stats = RolloutStats()
        self._lock = threading.Lock()
        self._version = 0
        self._group_counter = itertools.count()
        self._executor = ThreadPoolExecutor(self.config.max_in_flight, thread_name_prefix="episode")

    # -- consumer API ----------------------------------------------------------------------------------------

    def set_policy_version(self, version: int) -> None:
        """The policy version now being trained/served: staleness is measured against it."""
        with self._lock:
            self._version = max(self._version, version)

    @property
    def policy_version(self) -> int:
        with self._lock:
            return self._version

    @property
    def stats(self) -> RolloutStats:
        with self._lock:
            return replace(self._stats)

    def rollout(self, tasks: Iterable[pb.Task]) -> Generator[Group]:
        """G episodes per task, groups yielded as they complete (not in task order). Raises what an episode
        raised when it was not an infrastructure failure; stops starting episodes when the iterator is closed."""
        run = _Run(self, iter(tasks))
        try:
            while True:
                item = run.ready.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Group)
                run.taken()
                yield item
        finally:
            run.stop()

    async def arollout(self, tasks: Iterable[pb.Task]) -> AsyncIterator[Group]:
        """`rollout` for asyncio consumers: groups are awaited without blocking the event loop."""
        groups = self.rollout(tasks)
        try:
            while True:
                group = await asyncio.to_thread(next, groups, None)
                if group is None:
                    return
                yield group
        finally:
            groups.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RolloutManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one episode -----------------------------------------------------------------------------------------

    def _play(self, task: pb.Task, group_id: str, group_seed: int, index: int) -> pb.Trajectory:
        """One sample, retried on other replicas while infrastructure fails; never raises InfraError."""
        avoid: list[str] = []
        causes: list[str] = []
        seed = zlib.crc32(f"{group_seed}|{index}".encode())  # a retry replays the same sample
        for attempt in range(1, self.config.max_attempts + 1):
            env: EnvironmentSession | None = None
            user: UserSession | None = None
            started = time.perf_counter()
            IN_FLIGHT.inc()
            try:
                env = self.environments.open(task, avoid=avoid)
                user = self.users.open(task, seed=seed, episode_id=f"{group_id}/{index}/{attempt}", avoid=avoid)
                trajectory = run_episode(
                    task,
                    policy=self.policy,
                    env=env,
                    user=user,
                    tokenizer=self.tokenizer,
                    config=self.config.episode,
                    seed=seed,
                )
            except InfraError as exc:
                for side in (env, user):
                    if side is not None:
                        side.cancel()
                ATTEMPT_FAILURES.labels(exc.service).inc()
                with self._lock:
                    self._stats.failed_attempts += 1
                log.warning("episode attempt failed", extra={"group": group_id, "attempt": attempt, "cause": str(exc)})
                causes.append(str(exc))
                if exc.address:
                    avoid.append(exc.address)
                continue
            except BaseException:
                for side in (env, user):
                    if side is not None:
                        side.cancel()
                raise
            finally:
                IN_FLIGHT.dec()
                EPISODE_SECONDS.observe(time.perf_counter() - started)
            env.close()
            user.close()
            trajectory.group_id, trajectory.sample_index, trajectory.attempt = group_id, index, attempt
            return trajectory
        return pb.Trajectory(
            task_id=task.id,
            domain=task.domain,
            status=pb.EPISODE_STATUS_INFRA_FAILED,
            termination=f"infrastructure failed on all {len(causes)} attempt(s); last: {causes[-1]}",
            group_id=group_id,
            sample_index=index,
            attempt=len(causes),
        )

    def _count(self, trajectory: pb.Trajectory) -> None:
        EPISODES.labels(pb.EpisodeStatus.Name(trajectory.status)).inc()
        FORMAT_ERRORS.inc(trajectory.format_errors)
        versions = [t.policy_version for t in trajectory.tokens.turns]
        with self._lock:
            s = self._stats
            s.episodes += 1
            s.format_errors += trajectory.format_errors
            if trajectory.status == pb.EPISODE_STATUS_COMPLETED:
                s.completed += 1
            elif trajectory.status == pb.EPISODE_STATUS_TRUNCATED:
                s.truncated += 1
            elif trajectory.status == pb.EPISODE_STATUS_SIMULATOR_INVALID:
                s.simulator_invalid += 1
            else:
                s.dropped += 1
            if versions:
                self._version = max(self._version, max(versions))

    def _is_stale(self, group: Group) -> bool:
        k = self.config.max_staleness
        oldest = group.oldest_policy_version
        return k is not None and oldest is not None and self.policy_version - oldest > k


class _Run:
    """One `rollout` call: a dispatcher thread feeding the manager's episode workers from the task iterator."""

    def __init__(self, manager: RolloutManager, tasks: Iterator[pb.Task]) -> None:
        self.m = manager
        self.tasks = tasks
        self.ready: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.rerun: deque[pb.Task] = deque()
        self.cond = threading.Condition()
        self.in_flight = 0
        self.groups_open = 0
        self.waiting = 0  # groups in `ready` not yet taken by the consumer
        self.stopped = False
        self.failed = False
        self.thread = threading.Thread(target=self._dispatch, name="rollout-dispatch", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def taken(self) -> None:
        with self.cond:
            self.waiting -= 1
            self.cond.notify_all()

    def _next_task(self) -> pb.Task | None:
        with self.cond:
            if self.rerun:
                return self.rerun.popleft()
        return next(self.tasks, None)

    def _dispatch(self) -> None:
        config = self.m.config
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(
                        lambda: self.stopped or self.waiting + self.groups_open < config.max_ready_groups
                    )
                    if self.stopped:
                        return
                task = self._next_task()
                if task is None:
                    with self.cond:  # rerun groups may still come back from the episodes in flight
                        self.cond.wait_for(lambda: self.stopped or self.rerun or self.groups_open == 0)
                        if self.rerun and not self.stopped:
                            continue
                    self.ready.put(_DONE)
                    return
                n = next(self.m._group_counter)
                group = _PendingGroup(
                    task=task,
                    group_id=f"{task.id}#{n}",
                    seed=zlib.crc32(f"{config.seed}|{task.id}|{n}".encode()),
                    trajectories=[None] * config.group_size,
                )
                with self.cond:
                    self.groups_open += 1
                for index in range(config.group_size):
                    with self.cond:
                        self.cond.wait_for(lambda: self.stopped or self.in_flight < config.max_in_flight)
                        if self.stopped:
                            return
                        self.in_flight += 1
                    self.m._executor.submit(self._episode, group, index)
        except BaseException as exc:  # the task iterator itself failed
            self._fail(exc)

    def _episode(self, group: _PendingGroup, index: int) -> None:
        try:
            trajectory = self.m._play(group.task, group.group_id, group.seed, index)
        except BaseException as exc:
            self._fail(exc)
            return
        finally:
            with self.cond:
                self.in_flight -= 1
                self.cond.notify_all()
        self.m._count(trajectory)
        with self.cond:
            group.trajectories[index] = trajectory
            group.left -= 1
            if group.left:
                return
        self._complete(group)

    def _complete(self, pending: _PendingGroup) -> None:
        group = Group(pending.task, pending.group_id, [t for t in pending.trajectories if t is not None])
        stale = self.m._is_stale(group)
        with self.cond, self.m._lock:
            self.groups_open -= 1
            if stale and self.m.config.on_stale == "rerun":
                self.m._stats.stale_rerun += 1
                self.rerun.append(pending.task)
            elif stale:
                self.m._stats.stale_dropped += 1
            else:
                self.m._stats.groups += 1
                self.waiting += 1
            self.cond.notify_all()
        GROUPS.labels("stale_" + self.m.config.on_stale if stale else "delivered").inc()
        if not stale:
            self.ready.put(group)

    def _fail(self, exc: BaseException) -> None:
        with self.cond:
            if self.failed:
                return
            self.failed = self.stopped = True
            self.cond.notify_all()
        self.ready.put(exc)
