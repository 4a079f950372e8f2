"""Fuzzing every toolenv RPC against one real toolenv process: a clear status for every case, no crash, no hang,
and the server healthy (and holding no session) afterwards.

Tried, per RPC: random messages built from the contract (any fields, any oneof branch, unknown enum numbers,
extreme numbers, unicode), valid messages with random byte edits, invalid UTF-8 in any string field, random
bytes. On the Session stream also: requests in any order (call before open, open twice), tool arguments that are
not JSON, not an object, deeply nested, or of the wrong types, streams the client abandons after a few
responses, and streams closed before any request. On the multiplexed Sessions stream: frames of keyed calls,
requests and closes in any order, with or without the keys opened, and a random, mutated or undecodable frame.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import toolenv_pb2 as tpb
from eigenloop.env.remote import ToolEnvClient
from eigenloop.protocol import tool_call
from tests.reliability.conftest import Trials
from tests.reliability.fuzzing import CLEAR, assert_alive, fuzz_settings, record_multiplexed
from tests.reliability.protofuzz import (
    TEXT,
    garbage_frames,
    invalid_utf8,
    keyed_frame,
    messages,
    multiplexed_call,
    mutated,
    raw_call,
    string_paths,
)
from tests.support import ServiceProcess, wait_for

TOOLENV = "eigenloop_toolenv.server"
SERVICE = "/eigenloop.v1.ToolEnv/"

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
ARGUMENTS = st.one_of(
    st.dictionaries(
        st.sampled_from(["order_id", "user_id", "reason", "address", "summary", "x"]),
        st.sampled_from(["O10001", "U1001", "mistake"]) | JSON_VALUES,
        max_size=4,
    ).map(json.dumps),
    JSON_VALUES.map(json.dumps),
    st.integers(1, 20_000).map(lambda depth: "[" * depth),  # deeper than the interpreter's recursion limit
    st.integers(1, 20_000).map(lambda depth: '{"order_id": ' + '{"a": ' * depth + "1" + "}" * (depth + 1)),
    TEXT,
)
OVERRIDES = {
    "domain": st.sampled_from(["toy", "toy", "toy", "airline", "", "no-such-domain"]) | TEXT,
    "name": st.sampled_from(["get_user", "get_order", "cancel_order", "update_address", "read_emails"]) | TEXT,
    "arguments_json": ARGUMENTS,
    "data_patch_json": JSON_VALUES.map(json.dumps) | TEXT,
}
REQUESTS = messages(tpb.SessionRequest, OVERRIDES)
CALLS = messages(pb.ToolCall, OVERRIDES).map(lambda call: tpb.SessionRequest(call=call))
OPEN = tpb.SessionRequest(open=tpb.OpenSession(domain="toy")).SerializeToString()
# One request on the wire: usually a well-formed message (so the server's own checks are reached), else broken.
WIRE_REQUEST = st.one_of(
    *[CALLS.map(lambda m: m.SerializeToString())] * 6,  # tool calls, so streams live long enough to reach the tools
    REQUESTS.map(lambda m: m.SerializeToString()),
    mutated(REQUESTS),
    invalid_utf8(tpb.SessionRequest, REQUESTS),
)
UNARY = {
    "ListDomains": tpb.ListDomainsRequest,
    "DescribeDomain": tpb.DescribeDomainRequest,
}


@pytest.fixture(scope="module")
def toolenv() -> Iterator[ServiceProcess]:
    args = ["--max-arguments-bytes", "65536", "--max-message-bytes", "262144", "--max-calls-per-session", "5000"]
    with ServiceProcess(TOOLENV, args) as service:
        yield service
        assert_alive(service)


@pytest.mark.parametrize("method", list(UNARY))
def test_unary_rpcs(toolenv: ServiceProcess, method: str, trials: Trials) -> None:
    cls = UNARY[method]
    requests = messages(cls, OVERRIDES)
    cases = st.one_of(
        requests.map(lambda m: ("random message", m.SerializeToString())),
        mutated(requests).map(lambda b: ("mutated bytes", b)),
        st.binary(max_size=300).map(lambda b: ("random bytes", b)),
        *([invalid_utf8(cls, requests).map(lambda b: ("invalid UTF-8", b))] if string_paths(cls.DESCRIPTOR) else []),
    )

    @fuzz_settings(150)
    @given(case=cases)
    def run(case: tuple[str, bytes]) -> None:
        kind, data = case
        code = raw_call(channel, SERVICE + method, [data], client_streaming=False, server_streaming=False)
        trials.record("fuzz: toolenv", f"{method}: {kind}", code)
        assert code in CLEAR

    with grpc.insecure_channel(toolenv.address) as channel:
        run()
    assert_alive(toolenv)


def test_session_streams(toolenv: ServiceProcess, trials: Trials) -> None:
    streams = st.tuples(
        st.sampled_from([True, True, True, False]),  # start with a valid open (most streams), or with whatever comes
        st.lists(WIRE_REQUEST, max_size=6),
        st.none() | st.integers(1, 4),  # abandon the stream after this many responses
    )

    @fuzz_settings(900)
    @given(stream=streams)
    def run(stream: tuple[bool, list[bytes], int | None]) -> None:
        opened, requests, read = stream
        sent = [OPEN, *requests] if opened else requests
        code = raw_call(channel, SERVICE + "Session", sent, client_streaming=True, server_streaming=True, read=read)
        shape = "valid open, then fuzzed requests" if opened else "fuzzed requests only"
        ending = "abandoned early" if read is not None else "half-closed" if sent else "closed before any request"
        trials.record("fuzz: toolenv", f"Session: {shape}, {ending}", code)
        assert code in CLEAR | {"CANCELLED_BY_CLIENT"}

    with grpc.insecure_channel(toolenv.address) as channel:
        run()
    assert_alive(toolenv)
    # Every fuzzed stream has ended, abandoned ones included: the server holds no session any more.
    assert wait_for(lambda: toolenv.metric("eigenloop_toolenv_sessions_active") == 0, timeout_s=10)
    with ToolEnvClient(toolenv.address) as client, client.session("toy") as session:
        assert not session.call(tool_call("get_order", {"order_id": "O10001"})).error


# One keyed request of a Sessions frame: mostly tool calls (keys are opened first), any request, or a close.
KEYED = st.tuples(st.integers(0, 3), st.one_of(*[CALLS] * 4, REQUESTS, st.none()))
FRAMES = st.lists(st.lists(KEYED, max_size=5), max_size=4)


def test_sessions_streams(toolenv: ServiceProcess, trials: Trials) -> None:
    """Multiplexed: keys opened (or not), then frames of keyed calls, requests and closes in any order, and a
    random, mutated or undecodable frame among them. Every per-key error must be as clear as a stream's status."""
    opening = keyed_frame(tpb.SessionFrame, [(key, tpb.SessionRequest.FromString(OPEN)) for key in range(4)])

    @fuzz_settings(300)
    @given(opened=st.booleans(), frames=FRAMES, garbage=st.none() | garbage_frames(tpb.SessionFrame, OVERRIDES))
    def run(opened: bool, frames: list[list[tuple[int, tpb.SessionRequest | None]]], garbage: bytes | None) -> None:
        wire = ([opening] if opened else []) + [keyed_frame(tpb.SessionFrame, items) for items in frames]
        code, keys = multiplexed_call(channel, SERVICE + "Sessions", wire, tpb.SessionResultFrame, garbage)
        shape = "keys opened, then fuzzed frames" if opened else "fuzzed frames only"
        what = f"{shape}{', one garbage frame' if garbage else ''}"
        record_multiplexed(trials, "fuzz: toolenv", "Sessions", what, code, keys)

    with grpc.insecure_channel(toolenv.address) as channel:
        run()
    assert_alive(toolenv)
    assert wait_for(lambda: toolenv.metric("eigenloop_toolenv_sessions_active") == 0, timeout_s=10)


def test_tool_calls_in_one_session(toolenv: ServiceProcess, trials: Trials) -> None:
    # A bad tool call is the agent's mistake: it gets an error result (with its kind), and the session goes on.
    with ToolEnvClient(toolenv.address) as client, client.session("toy") as session:

        @fuzz_settings(1200)
        @given(call=messages(pb.ToolCall, OVERRIDES))
        def run(call: pb.ToolCall) -> None:
            result = session.call(call)
            trials.record("fuzz: toolenv", "Session call: fuzzed ToolCall", pb.ToolErrorKind.Name(result.error_kind))
            assert result.error_kind != pb.TOOL_ERROR_KIND_UNSPECIFIED
            assert result.error == (result.error_kind != pb.TOOL_ERROR_KIND_NONE)

        run()
        assert not session.call(tool_call("get_order", {"order_id": "O10001"})).error
