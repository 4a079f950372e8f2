"""The shared server runtime, exercised through toolenv processes: health, reflection, SIGTERM drain, auth,
and the client helper's round-robin and retries."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from eigenloop.contracts.v1 import toolenv_pb2 as tpb
from eigenloop.contracts.v1 import toolenv_pb2_grpc
from eigenloop.env.remote import TOOLENV_POLICY, ToolEnvClient
from eigenloop.launcher import free_port
from eigenloop.protocol import tool_call
from eigenloop.rpc.client import connect, grpc_target
from eigenloop.rpc.stream import StreamClosedError
from tests.conftest import TOOLENV
from tests.support import ServiceProcess, wait_for


def _health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        return int(
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        )


def test_health_reports_serving_for_server_and_service(toolenv: ServiceProcess) -> None:
    assert _health(toolenv.address) == health_pb2.HealthCheckResponse.SERVING
    assert _health(toolenv.address, "eigenloop.v1.ToolEnv") == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_services(toolenv: ServiceProcess) -> None:
    with grpc.insecure_channel(toolenv.address) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"eigenloop.v1.ToolEnv", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
        file = db.FindFileContainingSymbol("eigenloop.v1.ToolEnv")
        assert file.name == "eigenloop/v1/toolenv.proto"
        assert [m.name for m in file.service[0].method] == ["ListDomains", "DescribeDomain", "Session", "Sessions"]


@pytest.mark.parametrize("multiplexed", [False, True], ids=["stream", "multiplexed"])
def test_sigterm_drains_open_sessions_refuses_new_ones_and_exits_zero(multiplexed: bool) -> None:
    """The same with sessions as keys of one Sessions stream: the stream itself ends once its last key closed."""
    with (
        ServiceProcess(TOOLENV, ["--grace-period-s", "20"]) as service,
        ToolEnvClient(service.address, multiplexed=multiplexed) as client,
    ):
        session = client.session("toy")
        assert not session.call(tool_call("get_order", {"order_id": "O10001"})).error
        service.terminate()
        assert wait_for(lambda: _health(service.address) == health_pb2.HealthCheckResponse.NOT_SERVING)
        with pytest.raises(grpc.RpcError) as refused:
            client.session("toy")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "draining" in refused.value.details()
        # The open episode keeps working until it ends on its own.
        assert not session.call(tool_call("cancel_order", {"order_id": "O10001", "reason": "mistake"})).error
        assert service.proc.poll() is None
        session.close()
        assert service.proc.wait(timeout=15) == 0
    assert '"clean": true' in service.log.read_text()


@pytest.mark.parametrize(
    ("multiplexed", "failure"), [(False, grpc.RpcError), (True, StreamClosedError)], ids=["stream", "multiplexed"]
)
def test_drain_cancels_sessions_that_outlive_the_grace_period(multiplexed: bool, failure: type[Exception]) -> None:
    service = ServiceProcess(TOOLENV, ["--grace-period-s", "0.5"])
    with ToolEnvClient(service.address, multiplexed=multiplexed) as client:
        session = client.session("toy")
        service.terminate()
        assert service.proc.wait(timeout=15) == 0
        with pytest.raises(failure):
            session.call(tool_call("get_order", {"order_id": "O10001"}))


def test_shared_token_is_required_except_for_health() -> None:
    with ServiceProcess(TOOLENV, env={"EIGENLOOP_TOOLENV_AUTH_TOKEN": "s3cret"}) as service:
        assert _health(service.address) == health_pb2.HealthCheckResponse.SERVING
        with ToolEnvClient(service.address) as anonymous, pytest.raises(grpc.RpcError) as err:
            anonymous.list_domains()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with ToolEnvClient(service.address, auth_token="wrong") as wrong, pytest.raises(grpc.RpcError) as err:
            wrong.list_domains()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with ToolEnvClient(service.address, auth_token="s3cret") as ok:
            assert "toy" in [d.name for d in ok.list_domains()]
            with ok.session("toy") as session:
                assert not session.call(tool_call("get_order", {"order_id": "O10001"})).error


def test_new_sessions_round_robin_over_replicas() -> None:
    with ServiceProcess(TOOLENV) as a, ServiceProcess(TOOLENV) as b, ToolEnvClient([a.address, b.address]) as client:
        client.wait_ready()
        for _ in range(10):
            with client.session("toy") as session:
                session.call(tool_call("get_order", {"order_id": "O10001"}))
        served = [s.metric("eigenloop_toolenv_sessions_total", domain="toy") for s in (a, b)]
    assert sum(served) == 10
    assert min(served) >= 3, served


def test_a_dead_replica_is_skipped() -> None:
    dead = f"127.0.0.1:{free_port()}"
    with ServiceProcess(TOOLENV) as live, ToolEnvClient([dead, live.address]) as client:
        for _ in range(4):
            assert client.list_domains()
            with client.session("toy") as session:
                assert not session.call(tool_call("get_order", {"order_id": "O10001"})).error


class FlakyToolEnv(toolenv_pb2_grpc.ToolEnvServicer):
    """Fails the first `failures` ListDomains calls with UNAVAILABLE, like a replica restarting."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def ListDomains(self, request: tpb.ListDomainsRequest, context: grpc.ServicerContext) -> tpb.ListDomainsResponse:
        self.calls += 1
        if self.calls <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return tpb.ListDomainsResponse(domains=[tpb.DomainSummary(name="flaky")])

    def DescribeDomain(
        self, request: tpb.DescribeDomainRequest, context: grpc.ServicerContext
    ) -> tpb.DomainDescription:
        self.calls += 1
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "never retried")
        raise AssertionError


@pytest.fixture()
def flaky() -> tuple[FlakyToolEnv, str]:
    servicer = FlakyToolEnv(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    toolenv_pb2_grpc.add_ToolEnvServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_idempotent_unary_calls_are_retried_through_the_service_config(flaky: tuple[FlakyToolEnv, str]) -> None:
    servicer, address = flaky
    with ToolEnvClient(address) as client:
        assert [d.name for d in client.list_domains()] == ["flaky"]
        assert servicer.calls == 3
        with pytest.raises(grpc.RpcError) as err:
            client.describe("x")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert servicer.calls == 4  # INVALID_ARGUMENT is not retried


def test_service_config_sets_deadlines_retries_and_round_robin() -> None:
    config = TOOLENV_POLICY.service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    retried = [c for c in config["methodConfig"] if "retryPolicy" in c]
    assert [n["method"] for n in retried[0]["name"]] == ["ListDomains", "DescribeDomain"]
    assert retried[0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    by_method = {c["name"][0].get("method", ""): c for c in config["methodConfig"]}
    assert all("timeout" in c for method, c in by_method.items() if method != "Sessions")
    assert by_method["Session"]["timeout"] == "900.000s"
    # The multiplexed stream lives as long as its client: no deadline (each key waits for its own answers).
    assert "timeout" not in by_method["Sessions"]
    json.dumps(config)  # what grpc receives


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("localhost:50051", "dns:///localhost:50051"),
        ("dns:///toolenv.ns.svc.cluster.local:50051", "dns:///toolenv.ns.svc.cluster.local:50051"),
        ("127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        (["127.0.0.1:1", "localhost:2"], "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("[::1]:5,[::1]:6", "ipv6:[::1]:5,[::1]:6"),
    ],
)
def test_grpc_target_forms(given: str | list[str], target: str) -> None:
    assert grpc_target(given) == target


@pytest.mark.parametrize("bad", ["", "nohostport,alsobad", "127.0.0.1:1,[::1]:2"])
def test_grpc_target_rejects_bad_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        grpc_target(bad)


def test_unreachable_service_fails_fast_with_unavailable() -> None:
    channel = connect(f"127.0.0.1:{free_port()}", TOOLENV_POLICY)
    stub = toolenv_pb2_grpc.ToolEnvStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ListDomains(tpb.ListDomainsRequest(), timeout=3)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_bad_config_exits_with_a_clear_message(tmp_path: object) -> None:
    from pathlib import Path

    bad_yaml = Path(str(tmp_path)) / "toolenv.yaml"
    bad_yaml.write_text("grace_period_s: -1\n")
    for args, expected in [
        (["--config", str(bad_yaml)], "grace_period_s"),
        (["--config", "/nonexistent.yaml"], "config file not found"),
        (["--port", "notaport"], "port"),
        (["--bogus", "1"], "unrecognized arguments"),
    ]:
        proc = subprocess.run([sys.executable, "-m", TOOLENV, *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert expected in proc.stdout + proc.stderr
