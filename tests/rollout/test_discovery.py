"""Replica discovery from EndpointSlices, against recorded watch events (no cluster).

Tried: the recorded events of a user-sim Service scaling up (a pod not ready, then ready), a second slice added
and deleted, a pod terminating, a bookmark; the watcher relisting after a 410 Gone; a replica pool fed by the
live list (new replicas get new streams, removed ones none); IPv6 slices; targets that are not Kubernetes
ones; the DNS fallback outside a cluster; malformed targets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from eigenloop.rollout.discovery import (
    EndpointSliceAddresses,
    EndpointSliceWatcher,
    discover,
    parse_target,
)
from eigenloop.rollout.policy import INFERENCE_POLICY
from eigenloop.rpc.pool import ReplicaPool
from tests.support import wait_for

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "endpointslice_events.json").read_text())


def test_recorded_events_keep_the_ready_addresses() -> None:
    addresses = EndpointSliceAddresses(RECORDED["port"])
    addresses.reset(RECORDED["list"]["items"])
    assert list(addresses) == ["10.0.1.4:50051", "10.0.1.5:50051"]
    for step in RECORDED["events"]:
        addresses.apply(step["event"])
        assert list(addresses) == step["expect"], step["note"]


def test_the_watcher_relists_after_410_gone() -> None:
    lists = iter([RECORDED["list"], RECORDED["after_gone_list"]])
    watched_from: list[str] = []
    done = threading.Event()

    def list_slices() -> tuple[list[Mapping[str, Any]], str]:
        body = next(lists)
        return body["items"], body["metadata"]["resourceVersion"]

    def watch_slices(version: str) -> Iterator[Mapping[str, Any]]:
        watched_from.append(version)
        if len(watched_from) == 1:
            yield from (step["event"] for step in RECORDED["events"])
            yield RECORDED["gone"]
        else:
            done.wait(10)  # an idle watch, until the test stops it

    addresses = EndpointSliceAddresses(RECORDED["port"])
    watcher = EndpointSliceWatcher(addresses, list_slices, watch_slices, retry_s=0.01).start()
    try:
        assert wait_for(lambda: watched_from == ["1000", "2000"])
        assert list(addresses) == ["10.0.1.9:50051"]
    finally:
        watcher.stop()
        done.set()


def test_a_pool_on_the_live_list_follows_scaling() -> None:
    addresses = EndpointSliceAddresses(RECORDED["port"])
    addresses.reset(RECORDED["list"]["items"])
    pool = ReplicaPool(addresses, INFERENCE_POLICY, refresh_s=0.0)
    try:
        first = [pool.acquire().address for _ in range(4)]
        assert sorted(set(first)) == ["10.0.1.4:50051", "10.0.1.5:50051"]
        for step in RECORDED["events"][:2]:  # the third pod becomes ready
            addresses.apply(step["event"])
        assert pool.acquire().address == "10.0.1.6:50051"  # the idle new replica gets the next stream
        addresses.apply(RECORDED["events"][3]["event"])  # user-sim-1 terminating
        taken = {pool.acquire().address for _ in range(12)}
        assert "10.0.1.5:50051" not in taken
    finally:
        pool.close()


def test_ipv6_slices_and_numeric_ports() -> None:
    addresses = EndpointSliceAddresses(50051)
    slice_ = {
        "metadata": {"name": "s"},
        "addressType": "IPv6",
        "ports": [{"name": "grpc", "port": 50051}],
        "endpoints": [{"addresses": ["fd00::5"], "conditions": {}}],  # ready unset: unknown counts as ready
    }
    addresses.reset([slice_])
    assert list(addresses) == ["[fd00::5]:50051"]


def test_other_targets_pass_through() -> None:
    assert discover("127.0.0.1:1,127.0.0.1:2") == "127.0.0.1:1,127.0.0.1:2"
    assert discover(["a:1"]) == ["a:1"]
    assert parse_target("dns:///svc:1") is None
    assert parse_target("kubernetes:///eigenloop/user-sim:grpc") == ("eigenloop", "user-sim", "grpc")


def test_outside_a_cluster_the_fallback_is_dns_round_robin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert discover("kubernetes:///eigenloop/user-sim:50051") == "dns:///user-sim.eigenloop.svc:50051"
    with pytest.raises(ValueError, match="named port has no DNS fallback"):
        discover("kubernetes:///eigenloop/user-sim:grpc")


@pytest.mark.parametrize("target", ["kubernetes:///user-sim:50051", "kubernetes:///ns/user-sim", "kubernetes:///ns/:1"])
def test_malformed_targets_say_what_is_expected(target: str) -> None:
    with pytest.raises(ValueError, match="NAMESPACE/SERVICE:PORT"):
        parse_target(target)
