"""Fuzzed tool calls and raw bytes against a real toolenv: it answers every one, and keeps serving.

Tried: random tool names (known and unknown), random JSON values as arguments (any type, nesting, unicode),
random non-JSON text, both sides, and undecodable bytes sent straight to the Session method.
"""

from __future__ import annotations

import json

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.env.remote import RemoteSession, ToolEnvClient
from eigenloop.protocol import tool_call
from tests.support import ServiceProcess

NAMES = st.sampled_from(
    ["get_user", "get_order", "cancel_order", "update_address", "transfer_to_human", "read_emails"]
) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
ARGUMENTS = (
    st.dictionaries(
        st.sampled_from(["order_id", "user_id", "reason", "address", "summary", "x"]), JSON_VALUES, max_size=4
    ).map(json.dumps)
    | JSON_VALUES.map(json.dumps)
    | st.text(max_size=40)
)
SIDES = st.sampled_from([pb.TOOL_SIDE_UNSPECIFIED, pb.TOOL_SIDE_AGENT, pb.TOOL_SIDE_USER, 7])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES, arguments=ARGUMENTS, side=SIDES)
def test_every_fuzzed_call_gets_a_result(client: ToolEnvClient, name: str, arguments: str, side: int) -> None:
    with client.session("toy") as session:
        result = session.call(pb.ToolCall(name=name, arguments_json=arguments, side=side))
        assert result.error_kind != pb.TOOL_ERROR_KIND_UNSPECIFIED
        if result.error:
            assert result.content.startswith("Error: ")
        assert not session.call(tool_call("get_order", {"order_id": "O10001"})).error


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=200))
def test_undecodable_requests_are_refused_and_the_server_survives(toolenv: ServiceProcess, garbage: bytes) -> None:
    with grpc.insecure_channel(toolenv.address) as channel:
        raw = channel.stream_stream(
            "/eigenloop.v1.ToolEnv/Session", request_serializer=None, response_deserializer=None
        )
        try:
            for _ in raw(iter([garbage]), timeout=5):
                pass
        except grpc.RpcError as exc:
            assert exc.code() in (
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.UNKNOWN,
            )
    with ToolEnvClient(toolenv.address) as client:
        session: RemoteSession
        with client.session("toy") as session:
            assert not session.call(tool_call("get_order", {"order_id": "O10001"})).error
