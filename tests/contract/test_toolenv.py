"""Contract tests for every toolenv RPC against a real server process on a loopback port.

Bad inputs tried: unknown domain, unknown tool, wrong argument type, missing and extra fields, invalid
JSON, arguments over the tool payload limit, a message over the gRPC size limit, an empty request, a call
before open, a second open, a broken initial-state patch, evaluate without a checker, a cancelled stream; and
over a multiplexed Sessions stream, each of the protocol mistakes on one key (only that key ends) and the stream
ended under open keys. Session tests run both over Session streams and over keys of one Sessions stream.
"""

from __future__ import annotations

import json
import threading

import grpc
import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import toolenv_pb2 as tpb
from eigenloop.domains import load_domain
from eigenloop.domains.base import Side
from eigenloop.domains.toy.tasks import sample_tasks
from eigenloop.env.remote import ToolEnvClient
from eigenloop.protocol import text_message, tool_call
from eigenloop.rpc.mux import KeyRpcError, Multiplexer
from eigenloop.rpc.stream import StreamClosedError
from tests.support import ServiceProcess, wait_for


def test_list_domains(client: ToolEnvClient) -> None:
    domains = {d.name: d for d in client.list_domains()}
    assert domains["toy"].agent_tool_count == 5
    assert domains["toy"].user_tool_count == 1


def test_describe_domain_has_schemas_policy_and_user_tools(client: ToolEnvClient) -> None:
    d = client.describe("toy")
    assert "Cancel only pending orders" in d.policy
    by_name = {t.name: t for t in d.tools}
    schema = json.loads(by_name["cancel_order"].parameters_json_schema)
    assert schema["required"] == ["order_id", "reason"]
    assert schema["properties"]["reason"]["enum"] == ["mistake", "no_longer_needed", "found_cheaper"]
    assert schema["additionalProperties"] is False
    assert by_name["cancel_order"].kind == pb.TOOL_KIND_WRITE
    assert [t.name for t in d.user_tools] == ["read_emails"]
    assert d.user_tools[0].side == pb.TOOL_SIDE_USER
    assert "assert_order_status" in d.assertion_functions
    assert d.initial_state_hash == load_domain("toy").initial_state().hash()


def test_describe_unknown_domain_is_not_found(client: ToolEnvClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.describe("no-such-domain")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "toy" in err.value.details()


@pytest.mark.parametrize("task", sample_tasks(), ids=lambda t: t.id)
def test_gold_episode_scores_one_and_empty_episode_fails(client: ToolEnvClient, task: pb.Task) -> None:
    said = [text_message(pb.ROLE_ASSISTANT, f"It is {info}.") for info in task.checker.communicate_info]
    with client.session(task=task) as session:
        assert session.opened.domain == "toy"
        for call in task.checker.gold_actions:
            assert not session.call(call).error
        reward = session.evaluate(said)
    assert reward.value == 1.0, reward.failure_reason
    assert reward.final_state_hash == reward.expected_state_hash
    assert all(b.checked for b in reward.breakdown)
    with client.session(task=task) as session:
        empty = session.evaluate([])
    assert empty.value == 0.0
    assert empty.failure_reason


BAD_CALLS = [
    (pb.ToolCall(name="launch_rocket", arguments_json="{}"), pb.TOOL_ERROR_KIND_UNKNOWN_TOOL, "unknown tool"),
    (tool_call("get_order", {"order_id": 10001}), pb.TOOL_ERROR_KIND_INVALID_ARGUMENTS, "order_id"),
    (tool_call("cancel_order", {"order_id": "O10001"}), pb.TOOL_ERROR_KIND_INVALID_ARGUMENTS, "reason: Field required"),
    (tool_call("get_order", {"order_id": "O10001", "x": 1}), pb.TOOL_ERROR_KIND_INVALID_ARGUMENTS, "x: Extra inputs"),
    (
        tool_call("cancel_order", {"order_id": "O10001", "reason": "bored"}),
        pb.TOOL_ERROR_KIND_INVALID_ARGUMENTS,
        "reason",
    ),
    (pb.ToolCall(name="get_order", arguments_json='{"order_id": '), pb.TOOL_ERROR_KIND_INVALID_JSON, "JSON object"),
    (pb.ToolCall(name="get_order", arguments_json='["O10001"]'), pb.TOOL_ERROR_KIND_INVALID_JSON, "JSON object"),
    (tool_call("get_order", {"order_id": "O" * 5000}), pb.TOOL_ERROR_KIND_PAYLOAD_TOO_LARGE, "limit is 4096"),
    (tool_call("read_emails"), pb.TOOL_ERROR_KIND_WRONG_SIDE, "user-side tool"),
    (tool_call("get_order", side=Side.USER), pb.TOOL_ERROR_KIND_WRONG_SIDE, "agent-side tool"),
    (tool_call("get_order", {"order_id": "O99999"}), pb.TOOL_ERROR_KIND_TOOL_FAILED, "not found"),
]


@pytest.mark.parametrize(("call", "kind", "message"), BAD_CALLS, ids=lambda v: str(v)[:30])
def test_bad_tool_call_is_an_error_result_and_session_keeps_working(
    client: ToolEnvClient, call: pb.ToolCall, kind: int, message: str
) -> None:
    with client.session("toy") as session:
        before = session.state().state_hash
        result = session.call(call)
        assert result.error
        assert result.error_kind == kind, result.content
        assert message in result.content
        assert session.state().state_hash == before
        ok = session.call(tool_call("get_order", {"order_id": "O10001"}))
        assert not ok.error and json.loads(ok.content)["order_id"] == "O10001"


def _raw_stream(client: ToolEnvClient, *requests: tpb.SessionRequest) -> list[tpb.SessionResponse]:
    return list(client.stub.Session(iter(requests), timeout=10))


VIOLATIONS = [
    ([tpb.SessionRequest()], grpc.StatusCode.INVALID_ARGUMENT, "empty SessionRequest"),
    ([tpb.SessionRequest(call=tool_call("get_order"))], grpc.StatusCode.FAILED_PRECONDITION, "before 'open'"),
    (
        [tpb.SessionRequest(open=tpb.OpenSession(domain="toy"))] * 2,
        grpc.StatusCode.INVALID_ARGUMENT,
        "already has an open session",
    ),
    ([tpb.SessionRequest(open=tpb.OpenSession(domain="nope"))], grpc.StatusCode.NOT_FOUND, "unknown domain"),
    ([tpb.SessionRequest(open=tpb.OpenSession())], grpc.StatusCode.INVALID_ARGUMENT, "needs a domain"),
    (
        [
            tpb.SessionRequest(
                open=tpb.OpenSession(domain="toy", initial_state=pb.InitialState(data_patch_json="{oops"))
            )
        ],
        grpc.StatusCode.INVALID_ARGUMENT,
        "not JSON",
    ),
    (
        [
            tpb.SessionRequest(
                open=tpb.OpenSession(
                    domain="toy",
                    initial_state=pb.InitialState(data_patch_json='{"db": {"orders": {"O10001": {"status": "lost"}}}}'),
                )
            )
        ],
        grpc.StatusCode.INVALID_ARGUMENT,
        "does not fit domain toy",
    ),
    (
        [
            tpb.SessionRequest(
                open=tpb.OpenSession(
                    domain="toy",
                    initial_state=pb.InitialState(
                        actions=[tool_call("cancel_order", {"order_id": "O404", "reason": "mistake"})]
                    ),
                )
            )
        ],
        grpc.StatusCode.INVALID_ARGUMENT,
        "setup action cancel_order failed",
    ),
    (
        [tpb.SessionRequest(open=tpb.OpenSession(domain="toy", task=pb.Task(domain="other")))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "belongs to domain",
    ),
]
VIOLATION_IDS = [
    "empty",
    "call-before-open",
    "open-twice",
    "unknown-domain",
    "no-domain",
    "patch-not-json",
    "patch-invalid",
    "setup-fails",
    "task-domain-mismatch",
]


@pytest.mark.parametrize(("requests", "code", "message"), VIOLATIONS, ids=VIOLATION_IDS)
def test_protocol_violations_get_status_codes(
    client: ToolEnvClient, requests: list[tpb.SessionRequest], code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _raw_stream(client, *requests)
    assert err.value.code() == code
    assert message in err.value.details()


@pytest.mark.parametrize(("requests", "code", "message"), VIOLATIONS, ids=VIOLATION_IDS)
def test_protocol_violations_end_only_their_key(
    toolenv: ServiceProcess, requests: list[tpb.SessionRequest], code: grpc.StatusCode, message: str
) -> None:
    """Over a Sessions stream the same mistakes get the same codes, as a KeyError for that key alone: a session
    opened before on the same stream works on, and so does one opened after."""
    with ToolEnvClient(toolenv.address, multiplexed=True) as client:
        before = client.session("toy")
        mux = Multiplexer(client.stub.Sessions, tpb.SessionFrame, service="toolenv")
        key = mux.open(timeout_s=10)
        with pytest.raises(KeyRpcError) as err:
            for request in requests:
                key.send(request)
        assert err.value.code() == code
        assert message in err.value.details()
        lookup = tool_call("get_order", {"order_id": "O10001"})
        assert not before.call(lookup).error
        with client.session("toy") as after:
            assert not after.call(lookup).error
        assert mux.broken is None
        mux.close()


def test_message_over_size_limit_is_resource_exhausted(client: ToolEnvClient) -> None:
    huge = tool_call("get_order", {"order_id": "O" * 300_000})  # the server's limit is 256 KiB
    with pytest.raises(grpc.RpcError) as err:
        _raw_stream(client, tpb.SessionRequest(open=tpb.OpenSession(domain="toy")), tpb.SessionRequest(call=huge))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with client.session("toy") as session:  # the server is unharmed
        assert not session.call(tool_call("get_order", {"order_id": "O10001"})).error


def test_evaluate_without_checker_reports_checker_error(client: ToolEnvClient) -> None:
    with client.session("toy") as session:
        reward = session.evaluate([])
        assert reward.checker_error and "no checker" in reward.failure_reason
        task = sample_tasks()[0]
        explicit = session.evaluate([], checker=task.checker)
    assert not explicit.checker_error and explicit.value == 0.0


def test_sessions_are_isolated(client: ToolEnvClient) -> None:
    cancel = tool_call("cancel_order", {"order_id": "O10001", "reason": "mistake"})
    with client.session("toy") as a, client.session("toy") as b:
        assert not a.call(cancel).error
        assert json.loads(a.call(tool_call("get_order", {"order_id": "O10001"})).content)["status"] == "cancelled"
        assert json.loads(b.call(tool_call("get_order", {"order_id": "O10001"})).content)["status"] == "pending"
        assert a.state().state_hash != b.state().state_hash
    with client.session("toy") as fresh:
        assert json.loads(fresh.call(tool_call("get_order", {"order_id": "O10001"})).content)["status"] == "pending"


def test_user_tools_act_on_the_users_state(client: ToolEnvClient) -> None:
    task = sample_tasks()[1]
    with client.session(task=task) as session:
        emails = json.loads(session.call(tool_call("read_emails", side=Side.USER)).content)
        state = json.loads(session.state().state_json)
    assert emails == state["user"]["emails"] and "O1000" in emails[0]["subject"]


def test_concurrent_sessions(client: ToolEnvClient) -> None:
    errors: list[BaseException] = []

    def episode() -> None:
        try:
            task = sample_tasks()[0]
            with client.session(task=task) as session:
                for call in task.checker.gold_actions:
                    session.call(call)
                assert session.evaluate([]).value == 1.0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=episode) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors


def test_closed_or_broken_stream_frees_its_session(toolenv: ServiceProcess, client: ToolEnvClient) -> None:
    assert wait_for(lambda: toolenv.metric("eigenloop_toolenv_sessions_active") == 0)
    session = client.session("toy")
    assert toolenv.metric("eigenloop_toolenv_sessions_active") == 1
    session.close()
    assert wait_for(lambda: toolenv.metric("eigenloop_toolenv_sessions_active") == 0)
    broken = client.session("toy")
    broken.call(tool_call("get_order", {"order_id": "O10001"}))
    broken.cancel()  # the client vanishes mid-episode
    assert wait_for(lambda: toolenv.metric("eigenloop_toolenv_sessions_active") == 0)
    if not client.multiplexed:
        assert wait_for(
            lambda: (
                toolenv.metric("eigenloop_grpc_server_handled_total", grpc_method="Session", grpc_code="CANCELLED") >= 1
            )
        )


def test_a_multiplexed_stream_ending_frees_every_key(toolenv: ServiceProcess) -> None:
    assert wait_for(lambda: toolenv.metric("eigenloop_toolenv_sessions_active") == 0)
    client = ToolEnvClient(toolenv.address, multiplexed=True)
    sessions = [client.session("toy") for _ in range(3)]
    assert toolenv.metric("eigenloop_toolenv_sessions_active") == 3
    client.close()  # ends the one stream under all three, without closing any of them
    assert wait_for(lambda: toolenv.metric("eigenloop_toolenv_sessions_active") == 0)
    with pytest.raises(StreamClosedError):
        sessions[0].call(tool_call("get_order", {"order_id": "O10001"}))


def test_metrics_count_requests_and_tool_calls(toolenv: ServiceProcess, client: ToolEnvClient) -> None:
    handled = toolenv.metric("eigenloop_grpc_server_handled_total", grpc_method="ListDomains", grpc_code="OK")
    calls = toolenv.metric("eigenloop_toolenv_tool_calls_total", tool="get_order", outcome="none")
    for _ in range(3):
        client.list_domains()
    with client.session("toy") as session:
        session.call(tool_call("get_order", {"order_id": "O10001"}))
    assert (
        toolenv.metric("eigenloop_grpc_server_handled_total", grpc_method="ListDomains", grpc_code="OK") == handled + 3
    )
    assert toolenv.metric("eigenloop_toolenv_tool_calls_total", tool="get_order", outcome="none") == calls + 1
    assert toolenv.metric("eigenloop_grpc_server_handling_seconds_count", grpc_method="ListDomains") >= 3
    with pytest.raises(grpc.RpcError):
        client.describe("nope")
    assert (
        toolenv.metric("eigenloop_grpc_server_handled_total", grpc_method="DescribeDomain", grpc_code="NOT_FOUND") >= 1
    )


PYTHON_CHECKERS = [
    (
        "def check(state, messages):\n"
        "    return 1.0 if state['db']['orders']['O10001']['status'] == 'cancelled' else 0.0\n",
        1.0,
        "",
    ),
    ("import socket\ndef check(state, messages):\n    socket.create_connection(('127.0.0.1', 1))\n", None, "blocked"),
    ("def check(state, messages):\n    while True:\n        pass\n", None, "timeout"),
    ("def check(state, messages):\n    x = bytearray(2 * 1024**3)\n    return 1.0\n", None, "memory"),
    ("def check(state, messages):\n    return open('/etc/passwd').read()\n", None, "blocked"),
]


@pytest.mark.parametrize(("source", "value", "error"), PYTHON_CHECKERS, ids=["ok", "socket", "loop", "memory", "file"])
def test_python_checkers_run_sandboxed_and_failures_are_checker_errors(
    client: ToolEnvClient, source: str, value: float | None, error: str
) -> None:
    checker = pb.Checker(
        python=pb.PythonChecker(source=source, timeout_s=2.0), reward_basis=[pb.REWARD_COMPONENT_PYTHON]
    )
    with client.session("toy") as session:
        session.call(tool_call("cancel_order", {"order_id": "O10001", "reason": "mistake"}))
        reward = session.evaluate([], checker)
        assert not session.call(tool_call("get_order", {"order_id": "O10001"})).error  # toolenv unharmed
    if value is None:
        assert reward.checker_error and reward.value == 0.0
        assert error in reward.failure_reason or error in reward.breakdown[-1].detail
    else:
        assert not reward.checker_error and reward.value == value


def test_a_slow_evaluation_holds_up_no_other_session_of_its_stream(toolenv: ServiceProcess) -> None:
    """Multiplexed: one session's evaluation runs a sandboxed checker that computes for a while; meanwhile another
    session of the same Sessions stream gets its tool calls answered."""
    slow = "def check(state, messages):\n    for i in range(8_000_000):\n        pass\n    return 1.0\n"
    checker = pb.Checker(python=pb.PythonChecker(source=slow, timeout_s=4.5), reward_basis=[pb.REWARD_COMPONENT_PYTHON])
    with ToolEnvClient(toolenv.address, multiplexed=True) as client:
        evaluating, other = client.session("toy"), client.session("toy")
        evaluated = threading.Event()
        rewards: list[pb.Reward] = []

        def evaluate() -> None:
            rewards.append(evaluating.evaluate([], checker))
            evaluated.set()

        thread = threading.Thread(target=evaluate)
        thread.start()
        lookups = 0
        while not evaluated.is_set() and lookups < 20:
            assert not other.call(tool_call("get_order", {"order_id": "O10001"})).error
            lookups += 1
        thread.join(timeout=60)
        assert rewards and rewards[0].value == 1.0, rewards
        assert lookups == 20  # all answered while the evaluation was still running
