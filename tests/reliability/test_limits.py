"""Limits of the shared runtime and of toolenv: over each one, a clear refusal and the server keeps serving.

Tried: more open streams than max_streams_per_client from one client address; a message over max_message_bytes;
more RPCs at once than max_concurrent_rpcs; tool arguments over max_arguments_bytes; more calls in one session
than max_calls_per_session; a user_sim conversation asking for more turns than max_turns_limit (or fewer than
zero), and one that runs past its turn limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as upb
from eigenloop.contracts.v1 import user_sim_pb2_grpc
from eigenloop.domains import sample_tasks
from eigenloop.env.remote import RemoteSession, ToolEnvClient
from eigenloop.launcher import health
from eigenloop.protocol import tool_call
from eigenloop.rpc.server import ServiceRuntime
from tests.reliability.conftest import Trials
from tests.reliability.inprocess import toolenv_runtime
from tests.support import ServiceProcess

LOOKUP = tool_call("get_order", {"order_id": "O10001"})


@pytest.fixture(scope="module")
def limited() -> Iterator[ServiceRuntime]:
    settings = {
        "max_streams_per_client": 2,
        "max_message_bytes": 64 * 1024,
        "max_arguments_bytes": 1024,
        "max_calls_per_session": 5,
    }
    with toolenv_runtime(**settings) as runtime:
        yield runtime


@pytest.fixture()
def client(limited: ServiceRuntime) -> Iterator[ToolEnvClient]:
    with ToolEnvClient(f"127.0.0.1:{limited.port}", session_timeout_s=10) as c:
        yield c


def refusal(action: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        action()  # type: ignore[operator]
    return caught.value


def test_streams_beyond_the_per_client_cap_are_refused(client: ToolEnvClient, trials: Trials) -> None:
    first, second = client.session("toy"), client.session("toy")
    error = refusal(lambda: client.session("toy"))
    trials.record("limits", "a 3rd open Session from one client (max_streams_per_client=2)", error.code().name)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_streams_per_client" in (error.details() or "")
    assert not first.call(LOOKUP).error  # the streams already open are untouched
    first.close()
    with client.session("toy") as third:  # a freed slot can be used again
        assert not third.call(LOOKUP).error
    second.close()


def test_message_over_the_size_limit(client: ToolEnvClient, trials: Trials) -> None:
    session = client.session("toy")  # the refusal ends the stream: nothing left to close
    big = pb.ToolCall(name="get_order", arguments_json=json.dumps({"order_id": "x" * 100_000}))
    error = refusal(lambda: session.call(big))
    trials.record("limits", "a 100 kB message (max_message_bytes=64 kB)", error.code().name)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with client.session("toy") as fresh:
        assert not fresh.call(LOOKUP).error


def test_tool_arguments_over_the_payload_limit(client: ToolEnvClient, trials: Trials) -> None:
    # A bad tool call is the agent's mistake, not a broken protocol: an error result, and the session goes on.
    session: RemoteSession
    with client.session("toy") as session:
        result = session.call(pb.ToolCall(name="get_order", arguments_json=json.dumps({"order_id": "x" * 2000})))
        kind = pb.ToolErrorKind.Name(result.error_kind)
        trials.record("limits", "tool arguments of 2 kB (max_arguments_bytes=1 kB)", f"error result {kind}")
        assert result.error_kind == pb.TOOL_ERROR_KIND_PAYLOAD_TOO_LARGE and "limit is 1024" in result.content
        assert not session.call(LOOKUP).error


def test_calls_beyond_the_session_limit(client: ToolEnvClient, trials: Trials) -> None:
    session = client.session("toy")
    for _ in range(5):
        assert not session.call(LOOKUP).error
    error = refusal(lambda: session.call(LOOKUP))
    trials.record("limits", "a 6th tool call in one session (max_calls_per_session=5)", error.code().name)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "5 tool calls" in (error.details() or "")


def test_rpcs_beyond_max_concurrent_rpcs_are_refused(trials: Trials) -> None:
    with (
        toolenv_runtime(max_concurrent_rpcs=2) as runtime,
        ToolEnvClient(f"127.0.0.1:{runtime.port}", session_timeout_s=10) as client,
    ):
        held = [client.session("toy"), client.session("toy")]
        error = refusal(lambda: client.list_domains())
        trials.record("limits", "a 3rd RPC while 2 streams are open (max_concurrent_rpcs=2)", error.code().name)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_concurrent_rpcs" in (error.details() or "")
        assert health(f"127.0.0.1:{runtime.port}", timeout_s=5) == "SERVING"  # probes still answer at the limit
        for session in held:
            session.close()
        assert client.list_domains()


def converse(address: str, requests: list[upb.ConverseRequest]) -> list[upb.ConverseResponse]:
    with grpc.insecure_channel(address) as channel:
        return list(user_sim_pb2_grpc.UserSimStub(channel).Converse(iter(requests), timeout=10))


def test_user_sim_turn_limits(trials: Trials) -> None:
    task = sample_tasks("toy")[0]
    with ServiceProcess("eigenloop_user_sim.server", ["--max-turns-limit", "20"]) as user_sim:
        for max_turns, expected in [(-1, grpc.StatusCode.INVALID_ARGUMENT), (21, grpc.StatusCode.RESOURCE_EXHAUSTED)]:
            opening = upb.ConverseRequest(open=upb.OpenConversation(task=task, max_turns=max_turns))
            error = refusal(lambda opening=opening: converse(user_sim.address, [opening]))
            trials.record("limits", f"user_sim: open asking for max_turns={max_turns} (limit 20)", error.code().name)
            assert error.code() == expected and "max_turns" in (error.details() or "")
        # Within the limit, the user ends the conversation at its turn limit; a message after that is refused.
        talk = upb.ConverseRequest(agent_message=upb.AgentMessage(content="Could you tell me more?"))
        opening = upb.ConverseRequest(open=upb.OpenConversation(task=task, max_turns=2))
        error = refusal(lambda: converse(user_sim.address, [opening, *[talk] * 5]))
        trials.record("limits", "user_sim: agent messages past max_turns=2", error.code().name)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_slot_freed_at_the_limit_is_free_when_the_client_sees_it(trials: Trials) -> None:
    # Regression: at exactly max_concurrent_rpcs, a client that had just seen its stream end was sometimes refused
    # the next one (3 of 11163 soak episodes), because gRPC counts an RPC as active until after its status is sent.
    # The runtime now admits against its own count, which drops before the status goes out.
    refused = 0
    with (
        toolenv_runtime(max_concurrent_rpcs=2) as runtime,
        ToolEnvClient(f"127.0.0.1:{runtime.port}", session_timeout_s=10) as client,
    ):
        held = client.session("toy")
        for _ in range(300):
            try:
                with client.session("toy") as session:
                    session.call(LOOKUP)
            except grpc.RpcError:
                refused += 1
        held.close()
    trials.record(
        "limits", "close a stream at max_concurrent_rpcs=2 and open the next at once (x300)", f"{refused} refused"
    )
    assert refused == 0
