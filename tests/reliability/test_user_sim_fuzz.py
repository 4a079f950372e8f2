"""Fuzzing user_sim's Converse stream against one real user_sim process (procedural users): a clear status for
every case, no crash, no hang, and the server healthy (and holding no conversation) afterwards.

Tried: opens with a real sample task of every domain with random fields merged in (persona, instructions,
reference dialogue, checker, any turn limit including negative and huge ones) or a wholly random task; then agent
messages (empty, unicode, long), user tool results nobody asked for, requests in any order, valid messages with
random byte edits, invalid UTF-8 in any string field, random bytes; streams the client abandons early. On the
multiplexed Conversations stream: fuzzed opens on a few keys, then keyed requests and closes in any order, and a
random, mutated or undecodable frame.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as upb
from eigenloop.domains import sample_tasks
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
)
from tests.support import ServiceProcess, wait_for

USER_SIM = "eigenloop_user_sim.server"
CONVERSE = "/eigenloop.v1.UserSim/Converse"
CONVERSATIONS = "/eigenloop.v1.UserSim/Conversations"
TASKS = [task for domain in ("toy", "telecom", "retail", "airline") for task in sample_tasks(domain)[:5]]
OVERRIDES = {"domain": st.sampled_from(["toy", "telecom", "retail", "airline", "", "nope"]) | TEXT}


@st.composite
def opens(draw: st.DrawFn) -> upb.ConverseRequest:
    """A real task with random fields merged in (most), or a random one; any turn limit."""
    fuzzed = draw(messages(upb.OpenConversation, OVERRIDES, depth=4))
    if draw(st.integers(0, 3)):
        base = upb.OpenConversation(task=draw(st.sampled_from(TASKS)))
        base.MergeFrom(fuzzed) if draw(st.booleans()) else None
        if draw(st.booleans()):
            base.max_turns = draw(st.sampled_from([0, 1, 2, 5]) | st.integers(-(2**31), 2**31 - 1))
        fuzzed = base
    return upb.ConverseRequest(open=fuzzed)


AGENT_MESSAGES = (st.sampled_from(["", "Hello, how can I help?", "Done. Anything else?"]) | TEXT).map(
    lambda text: upb.ConverseRequest(agent_message=upb.AgentMessage(content=text))
)
REQUESTS = messages(upb.ConverseRequest, OVERRIDES)
WIRE_REQUEST = st.one_of(
    *[AGENT_MESSAGES.map(lambda m: m.SerializeToString())] * 5,
    REQUESTS.map(lambda m: m.SerializeToString()),
    mutated(REQUESTS),
    invalid_utf8(upb.ConverseRequest, REQUESTS),
)


@pytest.fixture(scope="module")
def user_sim() -> Iterator[ServiceProcess]:
    with ServiceProcess(USER_SIM, ["--max-turns", "8"]) as service:
        yield service
        assert_alive(service)


def test_converse_streams(user_sim: ServiceProcess, trials: Trials) -> None:
    streams = st.tuples(
        st.sampled_from([True, True, True, False]),  # an open first (most streams), or whatever comes
        opens(),
        st.lists(WIRE_REQUEST, max_size=8),
        st.none() | st.integers(1, 4),  # abandon the stream after this many responses
    )

    @fuzz_settings(800)
    @given(stream=streams)
    def run(stream: tuple[bool, upb.ConverseRequest, list[bytes], int | None]) -> None:
        opened, opening, requests, read = stream
        sent = [opening.SerializeToString(), *requests] if opened else requests
        code = raw_call(channel, CONVERSE, sent, client_streaming=True, server_streaming=True, read=read)
        shape = "fuzzed open, then fuzzed requests" if opened else "fuzzed requests only"
        ending = "abandoned early" if read is not None else "half-closed" if sent else "closed before any request"
        trials.record("fuzz: user_sim", f"Converse: {shape}, {ending}", code)
        assert code in CLEAR | {"CANCELLED_BY_CLIENT"}

    with grpc.insecure_channel(user_sim.address) as channel:
        run()
    assert_alive(user_sim)
    assert wait_for(lambda: user_sim.metric("eigenloop_user_sim_conversations_active") == 0, timeout_s=10)


def test_conversations_streams(user_sim: ServiceProcess, trials: Trials) -> None:
    """Multiplexed: fuzzed opens on a few keys, then frames of keyed agent messages, any requests and closes in
    any order, and a random, mutated or undecodable frame among them; every per-key error must be clear."""
    keyed = st.tuples(st.integers(0, 3), st.one_of(*[AGENT_MESSAGES] * 4, REQUESTS, st.none()))

    @fuzz_settings(300)
    @given(
        openings=st.lists(opens(), max_size=3),
        frames=st.lists(st.lists(keyed, max_size=5), max_size=4),
        garbage=st.none() | garbage_frames(upb.ConverseFrame, OVERRIDES),
    )
    def run(
        openings: list[upb.ConverseRequest],
        frames: list[list[tuple[int, upb.ConverseRequest | None]]],
        garbage: bytes | None,
    ) -> None:
        wire = [keyed_frame(upb.ConverseFrame, list(enumerate(openings)))]
        wire += [keyed_frame(upb.ConverseFrame, items) for items in frames]
        code, keys = multiplexed_call(channel, CONVERSATIONS, wire, upb.ConverseResultFrame, garbage)
        what = f"fuzzed frames{', one garbage frame' if garbage else ''}"
        record_multiplexed(trials, "fuzz: user_sim", "Conversations", what, code, keys)

    with grpc.insecure_channel(user_sim.address) as channel:
        run()
    assert_alive(user_sim)
    assert wait_for(lambda: user_sim.metric("eigenloop_user_sim_conversations_active") == 0, timeout_s=10)


def test_user_tool_results_nobody_asked_for(user_sim: ServiceProcess, trials: Trials) -> None:
    opening = upb.ConverseRequest(open=upb.OpenConversation(task=sample_tasks("telecom")[0])).SerializeToString()
    results = messages(pb.ToolResult, {"name": st.sampled_from(["toggle_airplane_mode", "check_status_bar"]) | TEXT})

    @fuzz_settings(300)
    @given(batch=st.lists(results, max_size=4))
    def run(batch: list[pb.ToolResult]) -> None:
        request = upb.ConverseRequest(tool_results=upb.UserToolResults(results=batch)).SerializeToString()
        code = raw_call(channel, CONVERSE, [opening, request], client_streaming=True, server_streaming=True)
        trials.record("fuzz: user_sim", "Converse: open, then fuzzed user tool results", code)
        assert code in CLEAR

    with grpc.insecure_channel(user_sim.address) as channel:
        run()
    assert_alive(user_sim)
