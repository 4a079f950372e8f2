"""Auth on the shared runtime: a bearer token (compared in constant time) and mutual TLS, with certificates made
here; /metrics on an interface of its own.

Tried, against every toolenv RPC and server reflection: no token, a wrong token, a token with one byte changed,
the right one; over mTLS: no client certificate, a certificate from another CA, a plaintext client, a client
that does not trust the server's CA, the right certificate. Health answers without a token: kubelet's gRPC probe
carries none, and it reveals only SERVING / NOT_SERVING. Over mTLS nothing answers a client without a valid
certificate, health included: the TLS handshake fails before any RPC exists, so the client sees UNAVAILABLE (no
status can travel over a connection that was never made). grpcio's Python server cannot ask for a certificate
without requiring it (`require_client_auth=False` does not request one at all; checked), so there is no way to let
the handshake through and refuse per RPC. UNAUTHENTICATED is the token's refusal, also on top of mTLS: a client
with a valid certificate and no token is refused on every RPC and on reflection.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eigenloop.contracts.v1 import toolenv_pb2 as tpb
from eigenloop.contracts.v1 import toolenv_pb2_grpc
from eigenloop.env.remote import TOOLENV_POLICY, ToolEnvClient
from eigenloop.rpc.client import ClientTLS, connect
from eigenloop.rpc.pool import ReplicaPool
from eigenloop.rpc.server import ServiceRuntime
from eigenloop_toolenv.server import ToolEnvConfig
from tests.reliability.certs import CertificateAuthority
from tests.reliability.conftest import Trials
from tests.reliability.inprocess import toolenv_runtime

TOKEN = "s3cret-token-for-tests"

Probe = Callable[[grpc.Channel], object]


def list_domains(channel: grpc.Channel) -> object:
    return toolenv_pb2_grpc.ToolEnvStub(channel).ListDomains(tpb.ListDomainsRequest(), timeout=5)


def describe_domain(channel: grpc.Channel) -> object:
    return toolenv_pb2_grpc.ToolEnvStub(channel).DescribeDomain(tpb.DescribeDomainRequest(domain="toy"), timeout=5)


def session(channel: grpc.Channel) -> object:
    opening = tpb.SessionRequest(open=tpb.OpenSession(domain="toy"))
    return list(toolenv_pb2_grpc.ToolEnvStub(channel).Session(iter([opening]), timeout=5))


def reflection(channel: grpc.Channel) -> object:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))


def health(channel: grpc.Channel) -> object:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


GUARDED: dict[str, Probe] = {
    "ToolEnv/ListDomains": list_domains,
    "ToolEnv/DescribeDomain": describe_domain,
    "ToolEnv/Session": session,
    "ServerReflection/ServerReflectionInfo": reflection,
}


def outcome(probe: Probe, channel: grpc.Channel) -> str:
    try:
        probe(channel)
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return "OK"


@pytest.fixture(scope="module")
def with_token() -> Iterator[ServiceRuntime]:
    with toolenv_runtime(auth_token=TOKEN) as runtime:
        yield runtime


@pytest.mark.parametrize("token", [None, "wrong", TOKEN[:-1] + "X", TOKEN + " ", ""])
@pytest.mark.parametrize("rpc", list(GUARDED))
def test_rpc_without_the_right_token_is_unauthenticated(
    with_token: ServiceRuntime, rpc: str, token: str | None, trials: Trials
) -> None:
    with connect(f"127.0.0.1:{with_token.port}", TOOLENV_POLICY, auth_token=token) as channel:
        seen = outcome(GUARDED[rpc], channel)
    shown = "no token" if token is None else "a wrong token" if token else "an empty token"
    trials.record("auth", f"{rpc} with {shown}", seen)
    assert seen == "UNAUTHENTICATED"


@pytest.mark.parametrize("rpc", list(GUARDED))
def test_rpc_with_the_token_is_served(with_token: ServiceRuntime, rpc: str, trials: Trials) -> None:
    with connect(f"127.0.0.1:{with_token.port}", TOOLENV_POLICY, auth_token=TOKEN) as channel:
        seen = outcome(GUARDED[rpc], channel)
    trials.record("auth", f"{rpc} with the token", seen)
    assert seen == "OK"


def test_health_answers_without_a_token(with_token: ServiceRuntime, trials: Trials) -> None:
    with connect(f"127.0.0.1:{with_token.port}", TOOLENV_POLICY) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    trials.record("auth", "Health/Check with no token (probes carry none)", "OK: SERVING")
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("pki")
    ca, rogue = CertificateAuthority(out, "ca"), CertificateAuthority(out, "rogue-ca")
    server, client = ca.issue("toolenv", server=True), ca.issue("trainer", server=False)
    stranger = rogue.issue("trainer", server=False)
    return {
        "ca": ca.identity.cert,
        "rogue_ca": rogue.identity.cert,
        "server_cert": server.cert,
        "server_key": server.key,
        "client_cert": client.cert,
        "client_key": client.key,
        "stranger_cert": stranger.cert,
        "stranger_key": stranger.key,
    }


@pytest.fixture(scope="module")
def with_mtls(pki: dict[str, Path]) -> Iterator[ServiceRuntime]:
    with toolenv_runtime(tls_cert=pki["server_cert"], tls_key=pki["server_key"], tls_client_ca=pki["ca"]) as runtime:
        yield runtime


def mtls_clients(pki: dict[str, Path]) -> dict[str, ClientTLS | None]:
    return {
        "a plaintext client": None,
        "no client certificate": ClientTLS.from_files(pki["ca"]),
        "a certificate from another CA": ClientTLS.from_files(pki["ca"], pki["stranger_cert"], pki["stranger_key"]),
        "a client that does not trust the server's CA": ClientTLS.from_files(
            pki["rogue_ca"], pki["stranger_cert"], pki["stranger_key"]
        ),
    }


@pytest.mark.parametrize(
    "client",
    [
        "a plaintext client",
        "no client certificate",
        "a certificate from another CA",
        "a client that does not trust the server's CA",
    ],
)
@pytest.mark.parametrize("rpc", [*GUARDED, "Health/Check"])
def test_mtls_refuses_clients_without_a_valid_certificate(
    with_mtls: ServiceRuntime, pki: dict[str, Path], client: str, rpc: str, trials: Trials
) -> None:
    probe = GUARDED.get(rpc, health)
    tls = mtls_clients(pki)[client]
    with connect(f"127.0.0.1:{with_mtls.port}", TOOLENV_POLICY, tls=tls) as channel:
        seen = outcome(probe, channel)
    trials.record("auth", f"{rpc} over mTLS with {client}", seen)
    assert seen == "UNAVAILABLE"


@pytest.mark.parametrize("rpc", [*GUARDED, "Health/Check"])
def test_mtls_serves_a_client_with_a_certificate_from_the_ca(
    with_mtls: ServiceRuntime, pki: dict[str, Path], rpc: str, trials: Trials
) -> None:
    tls = ClientTLS.from_files(pki["ca"], pki["client_cert"], pki["client_key"])
    with connect(f"127.0.0.1:{with_mtls.port}", TOOLENV_POLICY, tls=tls) as channel:
        seen = outcome(GUARDED.get(rpc, health), channel)
    trials.record("auth", f"{rpc} over mTLS with a certificate from the CA", seen)
    assert seen == "OK"


@pytest.fixture(scope="module")
def with_mtls_and_token(pki: dict[str, Path]) -> Iterator[ServiceRuntime]:
    files = {"tls_cert": pki["server_cert"], "tls_key": pki["server_key"], "tls_client_ca": pki["ca"]}
    with toolenv_runtime(auth_token=TOKEN, **files) as runtime:
        yield runtime


@pytest.mark.parametrize("token", [None, "wrong", TOKEN])
@pytest.mark.parametrize("rpc", list(GUARDED))
def test_mtls_and_token_together_need_both(
    with_mtls_and_token: ServiceRuntime, pki: dict[str, Path], rpc: str, token: str | None, trials: Trials
) -> None:
    tls = ClientTLS.from_files(pki["ca"], pki["client_cert"], pki["client_key"])
    with connect(f"127.0.0.1:{with_mtls_and_token.port}", TOOLENV_POLICY, tls=tls, auth_token=token) as channel:
        seen = outcome(GUARDED[rpc], channel)
    shown = {None: "no token", "wrong": "a wrong token", TOKEN: "the token"}[token]
    trials.record("auth", f"{rpc} over mTLS + token with a valid certificate and {shown}", seen)
    assert seen == ("OK" if token == TOKEN else "UNAUTHENTICATED")


def test_client_tls_needs_certificate_and_key_together(pki: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="needs its private key"):
        ClientTLS.from_files(pki["ca"], pki["client_cert"])


def test_metrics_can_listen_on_an_interface_of_its_own(trials: Trials) -> None:
    # 127.0.0.2 is another loopback address on Linux: gRPC on one interface, /metrics on the other.
    with toolenv_runtime(host="127.0.0.1", metrics_host="127.0.0.2") as runtime:
        text = urllib.request.urlopen(f"http://127.0.0.2:{runtime.metrics_port}/metrics", timeout=5).read()
        assert b"eigenloop_service_info" in text
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{runtime.metrics_port}/metrics", timeout=5)
    trials.record("auth", "/metrics on the gRPC interface when bound to another", "connection refused")


def test_a_non_ascii_token_refuses_cleanly(trials: Trials) -> None:
    # Regression: hmac.compare_digest raises TypeError on str with non-ASCII characters, which made the refusal an
    # UNKNOWN error instead of UNAUTHENTICATED. The token is now compared as bytes.
    with (
        toolenv_runtime(auth_token="tökén-ü") as runtime,
        connect(f"127.0.0.1:{runtime.port}", TOOLENV_POLICY, auth_token="wrong") as channel,
    ):
        seen = outcome(list_domains, channel)
    trials.record("auth", "ToolEnv/ListDomains with a wrong token, server token non-ASCII", seen)
    assert seen == "UNAUTHENTICATED"


def test_replica_pool_and_service_config_speak_mtls(with_mtls: ServiceRuntime, pki: dict[str, Path]) -> None:
    # A service calling another takes its client identity from its own config: tls_ca on, tls_cert/tls_key as the
    # client certificate; the replica pool (user_sim's client) passes it to every replica's channel.
    config = ToolEnvConfig(tls_ca=pki["ca"], tls_cert=pki["client_cert"], tls_key=pki["client_key"])
    tls = ClientTLS.from_config(config)
    assert tls is not None and ClientTLS.from_config(ToolEnvConfig()) is None
    pool = ReplicaPool([f"127.0.0.1:{with_mtls.port}"], TOOLENV_POLICY, tls=tls)
    try:
        with pool.lease() as lease:
            assert outcome(list_domains, lease.channel) == "OK"
    finally:
        pool.close()


def test_the_toolenv_client_runs_a_session_over_mtls(with_mtls: ServiceRuntime, pki: dict[str, Path]) -> None:
    tls = ClientTLS.from_files(pki["ca"], pki["client_cert"], pki["client_key"])
    client = ToolEnvClient(f"127.0.0.1:{with_mtls.port}", tls=tls)
    try:
        assert "toy" in [d.name for d in client.list_domains()]
    finally:
        client.channel.close()
