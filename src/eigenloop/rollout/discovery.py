"""Where the replicas of a service are: a static list, a DNS name, or a Kubernetes Service's EndpointSlices.

`discover(target)` returns what the replica pools take. For `kubernetes:///NAMESPACE/SERVICE:PORT` it is a live
address list (`EndpointSliceAddresses`) kept current by a watch on the Service's EndpointSlices (in-cluster
config), so a pool refreshing every second sends new episodes to a new replica within seconds and none to a
removed or unready one. Without the `kubernetes` client or in-cluster credentials it falls back to DNS
round-robin over the Service name (a headless Service lists every ready pod). Anything else passes through.

The watch: list the slices (label `kubernetes.io/service-name`), then watch from the list's resourceVersion;
when the watch ends or fails (410 Gone after compaction, a dropped connection) list again and resume.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

log = logging.getLogger(__name__)

SCHEME = "kubernetes:///"
SERVICE_LABEL = "kubernetes.io/service-name"

ListSlices = Callable[[], tuple[list[Mapping[str, Any]], str]]
"""Every EndpointSlice of the Service as raw JSON objects, and the list's resourceVersion."""
WatchSlices = Callable[[str], Iterator[Mapping[str, Any]]]
"""Raw watch events ({"type", "object"}) from a resourceVersion on."""


def _slice_addresses(obj: Mapping[str, Any], port: str | int) -> list[str]:
    ports = obj.get("ports") or []
    numbers = [p.get("port") for p in ports if p.get("name") == port or p.get("port") == port]
    if not numbers and isinstance(port, int):
        numbers = [port]  # a slice without port info (selector-less Services): the port we were told
    if not numbers or numbers[0] is None:
        return []
    number = int(numbers[0])
    ipv6 = obj.get("addressType") == "IPv6"
    out = []
    for endpoint in obj.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        # An unset `ready` means unknown, which the API says to treat as ready; terminating pods take no new work.
        if conditions.get("ready") is False or conditions.get("terminating") is True:
            continue
        for ip in endpoint.get("addresses") or []:
            out.append(f"[{ip}]:{number}" if ipv6 else f"{ip}:{number}")
    return out


class EndpointSliceAddresses(Sequence[str]):
    """The ready addresses of one Service's port, from its EndpointSlices; a live, thread-safe list."""

    def __init__(self, port: str | int) -> None:
        self.port = port
        self._slices: dict[str, list[str]] = {}
        self._snapshot: list[str] = []
        self._lock = threading.Lock()
        self.synced = threading.Event()

    def reset(self, slices: Sequence[Mapping[str, Any]]) -> None:
        """Replace everything with a fresh list of slices."""
        with self._lock:
            self._slices = {s["metadata"]["name"]: _slice_addresses(s, self.port) for s in slices}
            self._publish()
        self.synced.set()

    def apply(self, event: Mapping[str, Any]) -> None:
        """One watch event: ADDED / MODIFIED replace a slice's endpoints, DELETED drops them; others are ignored."""
        kind, obj = event.get("type"), event.get("object") or {}
        name = (obj.get("metadata") or {}).get("name")
        if kind not in ("ADDED", "MODIFIED", "DELETED") or not name:
            return
        with self._lock:
            if kind == "DELETED":
                self._slices.pop(name, None)
            else:
                self._slices[name] = _slice_addresses(obj, self.port)
            self._publish()

    def _publish(self) -> None:
        self._snapshot = sorted({a for addresses in self._slices.values() for a in addresses})

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._snapshot[index]

    def __len__(self) -> int:
        return len(self._snapshot)

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot)  # one snapshot, even if an event lands mid-iteration

    def __repr__(self) -> str:
        return f"EndpointSliceAddresses({self._snapshot})"


class EndpointSliceWatcher:
    """Keeps `addresses` current from `list_slices` + `watch_slices` in a daemon thread (see the module doc)."""

    def __init__(
        self,
        addresses: EndpointSliceAddresses,
        list_slices: ListSlices,
        watch_slices: WatchSlices,
        *,
        retry_s: float = 1.0,
    ) -> None:
        self.addresses = addresses
        self.list_slices = list_slices
        self.watch_slices = watch_slices
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="endpointslice-watch", daemon=True)

    def start(self, *, wait_s: float = 10.0) -> EndpointSliceWatcher:
        self._thread.start()
        if not self.addresses.synced.wait(wait_s):
            log.warning("no EndpointSlice list yet; starting with no replicas")
        return self

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> None:
        """List, then follow the watch until it ends (raises what the API raised)."""
        slices, version = self.list_slices()
        self.addresses.reset(slices)
        for event in self.watch_slices(version):
            if self._stop.is_set():
                return
            if event.get("type") == "ERROR":  # e.g. 410 Gone: the version was compacted away; list again
                log.info("EndpointSlice watch error event; relisting", extra={"status": event.get("object")})
                return
            self.addresses.apply(event)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the API server restarted, RBAC changed, ...: keep the last addresses
                log.warning("EndpointSlice watch failed; retrying", extra={"error": str(exc)})
                self._stop.wait(self.retry_s)


def parse_target(target: str) -> tuple[str, str, str | int] | None:
    """(namespace, service, port) of a `kubernetes:///NAMESPACE/SERVICE:PORT` target; None for other targets."""
    if not target.startswith(SCHEME):
        return None
    path = target[len(SCHEME) :]
    namespace, slash, rest = path.partition("/")
    service, colon, port = rest.rpartition(":")
    if not (slash and colon and namespace and service and port):
        raise ValueError(f"{target!r}: expected {SCHEME}NAMESPACE/SERVICE:PORT (PORT a number or a port name)")
    return namespace, service, int(port) if port.isdigit() else port


def _kubernetes_source(namespace: str, service: str) -> tuple[ListSlices, WatchSlices]:
    from kubernetes import client, config, watch  # optional: the `kube` extra

    config.load_incluster_config()  # type: ignore[no-untyped-call]
    api = client.DiscoveryV1Api()
    selector = f"{SERVICE_LABEL}={service}"

    def list_slices() -> tuple[list[Mapping[str, Any]], str]:
        # Raw JSON (not preloaded into models): the same shape the watch events carry.
        raw: Any = api.list_namespaced_endpoint_slice(namespace, label_selector=selector, _preload_content=False)
        body = json.loads(raw.data)
        return list(body.get("items") or []), str(body["metadata"].get("resourceVersion", ""))

    def watch_slices(version: str) -> Iterator[Mapping[str, Any]]:
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            api.list_namespaced_endpoint_slice,
            namespace,
            label_selector=selector,
            resource_version=version,
            timeout_seconds=300,
        )
        for event in stream:
            yield {"type": event["type"], "object": event["raw_object"]}

    return list_slices, watch_slices


def discover(target: str | Sequence[str]) -> str | Sequence[str]:
    """What a replica pool should be given for `target` (see the module docstring)."""
    if not isinstance(target, str):
        return target
    parsed = parse_target(target)
    if parsed is None:
        return target
    namespace, service, port = parsed
    try:
        list_slices, watch_slices = _kubernetes_source(namespace, service)
    except Exception as exc:  # no client installed, not in a cluster, no service account
        if not isinstance(port, int):
            raise ValueError(
                f"{target!r}: cannot watch EndpointSlices ({exc}) and a named port has no DNS fallback"
            ) from exc
        log.warning("EndpointSlice watch unavailable; using DNS round-robin", extra={"error": str(exc)})
        return f"dns:///{service}.{namespace}.svc:{port}"
    addresses = EndpointSliceAddresses(port)
    EndpointSliceWatcher(addresses, list_slices, watch_slices).start()
    log.info("watching EndpointSlices", extra={"service": service, "replicas": len(addresses)})
    return addresses
