"""Replica pools for long-lived streams: new streams go to the least-loaded replica and stay there.

gRPC's round_robin balances calls, but a conversation must stay on the replica that holds its state and
replicas should get new conversations in proportion to how busy they are. So a pool keeps one channel
per replica address and counts the streams it has open on each. Addresses come from a static list or
from a DNS name (a headless Kubernetes Service lists every pod), re-resolved every `refresh_s`.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from eigenloop.rpc.client import ClientTLS, ServicePolicy, connect


@dataclass
class _Replica:
    address: str
    channel: grpc.Channel
    open_streams: int = 0
    served: int = 0
    listed: bool = True  # False once discovery dropped it: no new streams, closed when its last one ends


@dataclass(frozen=True)
class Lease:
    address: str
    channel: grpc.Channel


def resolve(target: str | Sequence[str]) -> list[str]:
    """Every replica address: a list is taken as is; `dns:///name:port` or `name:port` resolves to all A records."""
    if not isinstance(target, str):
        return list(target)
    if "," in target:
        return [a.strip() for a in target.split(",") if a.strip()]
    host, _, port = target.removeprefix("dns:///").rpartition(":")
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    ips = sorted({str(info[4][0]) for info in infos})
    return [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in ips]


class ReplicaPool:
    def __init__(
        self,
        target: str | Sequence[str],
        policy: ServicePolicy,
        *,
        refresh_s: float = 10.0,
        auth_token: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.target = target
        self.policy = policy
        self.refresh_s = refresh_s
        self.auth_token = auth_token
        self.tls = tls
        self._lock = threading.Lock()
        self._replicas: dict[str, _Replica] = {}
        self._tiebreak = itertools.count()
        self._resolved_at = 0.0
        self._refresh()

    def _refresh(self) -> None:
        addresses = resolve(self.target)
        if not addresses:
            raise ValueError(f"no replicas found for {self.target!r}")
        with self._lock:
            for address in addresses:
                if address in self._replicas:
                    self._replicas[address].listed = True
                else:
                    self._replicas[address] = _Replica(
                        address, connect(address, self.policy, auth_token=self.auth_token, tls=self.tls)
                    )
            for address in set(self._replicas) - set(addresses):
                gone = self._replicas[address]
                gone.listed = False
                if gone.open_streams == 0:  # streams still open there end on their own
                    gone.channel.close()
                    del self._replicas[address]
            self._resolved_at = time.monotonic()

    def acquire(self, avoid: Sequence[str] = ()) -> Lease:
        """The least-loaded replica (not in `avoid`, when another exists), counted busy until released."""
        if time.monotonic() - self._resolved_at > self.refresh_s:
            self._refresh()
        with self._lock:
            listed = [r for r in self._replicas.values() if r.listed]
            candidates = [r for r in listed if r.address not in avoid] or listed
            turn = next(self._tiebreak)
            chosen = min(candidates, key=lambda r: (r.open_streams, (candidates.index(r) - turn) % len(candidates)))
            chosen.open_streams += 1
            chosen.served += 1
            return Lease(chosen.address, chosen.channel)

    def release(self, lease: Lease) -> None:
        with self._lock:
            replica = self._replicas.get(lease.address)
            if replica is not None:
                replica.open_streams -= 1
                if not replica.listed and replica.open_streams == 0:
                    replica.channel.close()
                    del self._replicas[lease.address]

    @contextmanager
    def lease(self, avoid: Sequence[str] = ()) -> Iterator[Lease]:
        taken = self.acquire(avoid)
        try:
            yield taken
        finally:
            self.release(taken)

    def load(self) -> dict[str, tuple[int, int]]:
        """{address: (open streams, streams served so far)}."""
        with self._lock:
            return {a: (r.open_streams, r.served) for a, r in self._replicas.items()}

    def close(self) -> None:
        with self._lock:
            for replica in self._replicas.values():
                replica.channel.close()
            self._replicas.clear()
