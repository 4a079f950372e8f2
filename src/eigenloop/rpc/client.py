"""Client channels: deadlines, keepalive, retries for idempotent unary calls, round-robin over replicas.

Everything is expressed with gRPC's own machinery (target schemes and the service config), so the same
channel works against one local process, a static list of replicas, or a headless Kubernetes Service.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from eigenloop.config import ServiceConfig

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0
    retryable_codes: tuple[str, ...] = ("UNAVAILABLE",)


@dataclass(frozen=True)
class ServicePolicy:
    """Per-service client policy: which unary methods are safe to retry and the default deadlines."""

    service: str
    idempotent_methods: tuple[str, ...] = ()
    unary_timeout_s: float = 10.0
    stream_timeout_s: float = 600.0
    streaming_methods: tuple[str, ...] = ()
    multiplexed_methods: tuple[str, ...] = ()
    """Streams that live as long as the client (eigenloop.rpc.mux): no deadline; each key has its own."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def service_config(self) -> dict[str, Any]:
        def seconds(value: float) -> str:
            return f"{value:.3f}s"

        retry = {
            "maxAttempts": self.retry.max_attempts,
            "initialBackoff": seconds(self.retry.initial_backoff_s),
            "maxBackoff": seconds(self.retry.max_backoff_s),
            "backoffMultiplier": self.retry.backoff_multiplier,
            "retryableStatusCodes": list(self.retry.retryable_codes),
        }
        configs: list[dict[str, Any]] = [
            {"name": [{"service": self.service}], "timeout": seconds(self.unary_timeout_s)}
        ]
        if self.idempotent_methods:
            configs.append(
                {
                    "name": [{"service": self.service, "method": m} for m in self.idempotent_methods],
                    "timeout": seconds(self.unary_timeout_s),
                    "retryPolicy": retry,
                }
            )
        if self.streaming_methods:
            configs.append(
                {
                    "name": [{"service": self.service, "method": m} for m in self.streaming_methods],
                    "timeout": seconds(self.stream_timeout_s),
                }
            )
        if self.multiplexed_methods:
            configs.append({"name": [{"service": self.service, "method": m} for m in self.multiplexed_methods]})
        return {"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": configs}


def grpc_target(addresses: str | Sequence[str]) -> str:
    """Turn what a user writes into a gRPC target that load-balances over every replica.

    "host:port"                 one address (a DNS name resolves to all its A records)
    "h1:p1,h2:p2" or a list     a static list: every address becomes a round-robin backend
    "dns:///svc.ns:port"        passed through: a headless Service's DNS name lists all pod IPs
    """
    if isinstance(addresses, str):
        if "://" in addresses or addresses.startswith(("ipv4:", "ipv6:", "unix:")):
            return addresses
        parts = [a.strip() for a in addresses.split(",") if a.strip()]
    else:
        parts = [a.strip() for a in addresses]
    if not parts:
        raise ValueError("no address given")
    if len(parts) == 1:
        return f"dns:///{parts[0]}"
    resolved = [_resolve(part) for part in parts]
    families = {family for family, _ in resolved}
    if families == {"ipv4"}:
        return "ipv4:" + ",".join(addr for _, addr in resolved)
    if families == {"ipv6"}:
        return "ipv6:" + ",".join(addr for _, addr in resolved)
    raise ValueError(f"mixed IPv4 and IPv6 addresses cannot share a channel: {parts}")


def _resolve(address: str) -> tuple[str, str]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} must look like host:port")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = ipaddress.ip_address(socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)[0][4][0])
    if ip.version == 4:
        return "ipv4", f"{ip}:{port}"
    return "ipv6", f"[{ip}]:{port}"


@dataclass(frozen=True)
class ClientTLS:
    """TLS for a client channel: the CA that signed the servers' certificates, and for mTLS this client's own."""

    root_certificates: bytes
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None  # the name checked against the server certificate, when not the target's host

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate needs its private key, and a key its certificate")

    @classmethod
    def from_files(cls, ca: Path, cert: Path | None = None, key: Path | None = None) -> ClientTLS:
        return cls(ca.read_bytes(), cert.read_bytes() if cert else None, key.read_bytes() if key else None)

    @classmethod
    def from_config(cls, config: ServiceConfig) -> ClientTLS | None:
        """A service's outgoing TLS: on when `tls_ca` is set; its own `tls_cert`/`tls_key` are its client identity."""
        if config.tls_ca is None:
            return None
        return cls.from_files(config.tls_ca, config.tls_cert, config.tls_key)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)


def connect(
    addresses: str | Sequence[str],
    policy: ServicePolicy,
    *,
    auth_token: str | None = None,
    root_certificates: bytes | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    tls: ClientTLS | None = None,
) -> grpc.Channel:
    """A channel to every replica of one service, with that service's retry and deadline policy.

    `tls` turns on TLS (with a client certificate: mTLS); `root_certificates` alone is shorthand for
    `ClientTLS(root_certificates)`.
    """
    if tls is None and root_certificates is not None:
        tls = ClientTLS(root_certificates)
    options = [
        ("grpc.service_config", json.dumps(policy.service_config())),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    target = grpc_target(addresses)
    if tls is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        if tls.server_name is not None:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(target, tls.credentials(), options=options)
    if auth_token is not None:
        channel = grpc.intercept_channel(channel, _BearerToken(auth_token))
    return channel


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the shared token to every call; works on plaintext channels too, unlike call credentials."""

    def __init__(self, token: str) -> None:
        self.metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), self.metadata])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)
