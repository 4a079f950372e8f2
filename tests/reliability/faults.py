"""Fault injection against real local services: start a stack of processes, run episodes, break things mid-way,
and count what happened to every episode.

A new fault case needs a service in `LocalStack.start` (any `python -m` server module) and a fault: `kill`
(SIGKILL, no drain: the process just disappears) or whatever the test does to the process or its backend. The
trainer cases (kill mid-step, mid-checkpoint write) plug in the same way once services/trainer exists.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.support import ServiceProcess

MODULES = {
    "toolenv": "eigenloop_toolenv.server",
    "user_sim": "eigenloop_user_sim.server",
    "inference": "eigenloop_inference.server",
}


class LocalStack:
    """Named services, each with replicas, as processes on loopback ports; everything is stopped on exit."""

    def __init__(self) -> None:
        self.replicas: dict[str, list[ServiceProcess]] = {}

    def start(self, name: str, replicas: int = 1, args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        module = MODULES[name]
        self.replicas.setdefault(name, []).extend(ServiceProcess(module, args, env) for _ in range(replicas))

    def addresses(self, name: str) -> list[str]:
        return [replica.address for replica in self.replicas[name]]

    def kill(self, name: str, index: int = 0) -> str:
        """SIGKILL one replica (no drain, no goodbye) and wait until it is gone; returns its address."""
        replica = self.replicas[name][index]
        replica.proc.send_signal(signal.SIGKILL)
        replica.proc.wait(timeout=10)
        return replica.address

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        for replicas in self.replicas.values():
            for replica in replicas:
                replica.stop()


@dataclass
class Outcomes:
    """What happened to every episode: completed first time, infrastructure-failed, completed on a retry, dropped."""

    counts: Counter[str] = field(default_factory=Counter)
    rewards: list[float] = field(default_factory=list)

    def run(
        self, attempt: Callable[[int], float], is_infrastructure: Callable[[BaseException], bool], retries: int = 1
    ) -> None:
        """Run one episode (`attempt(n)` for n = 0, 1, ...) until it completes, or drop it after `retries` retries.

        Only infrastructure failures are retried; any other exception is a bug and propagates.
        """
        for number in range(retries + 1):
            try:
                reward = attempt(number)
            except BaseException as exc:
                if not is_infrastructure(exc):
                    raise
                self.counts["infrastructure-failed"] += 1
                continue
            self.counts["completed" if number == 0 else "completed on retry"] += 1
            self.rewards.append(reward)
            return
        self.counts["dropped"] += 1

    def summary(self) -> str:
        return ", ".join(f"{count} {what}" for what, count in sorted(self.counts.items()))
