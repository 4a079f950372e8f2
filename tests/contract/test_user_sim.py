"""user_sim against real server processes on loopback: conversations, bad input, metrics, replicas.

Bad inputs tried: an empty request, a message before open, a second open, an unknown domain, a task with
no domain, an agent message after the user stopped, tool results nobody asked for; a killed replica; a turn
past the client's deadline. Conversations run both as Converse streams and as keys of one Conversations stream.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as upb
from eigenloop.contracts.v1 import user_sim_pb2_grpc
from eigenloop.domains import load_domain, sample_tasks
from eigenloop.env.session import EnvSession
from eigenloop.rollout.scripted import replay_reference
from eigenloop.rpc.mux import Multiplexer
from eigenloop.usersim.remote import ReplicaFailedError, UserSimClient
from tests.support import ServiceProcess, wait_for

USER_SIM = "eigenloop_user_sim.server"


@pytest.fixture(scope="module")
def user_sim() -> Iterator[ServiceProcess]:
    with ServiceProcess(USER_SIM) as service:
        yield service


@pytest.fixture(params=["stream", "multiplexed"])
def client(user_sim: ServiceProcess, request: pytest.FixtureRequest) -> Iterator[UserSimClient]:
    """Conversations as Converse streams of their own, or as keys of one Conversations stream."""
    with UserSimClient(user_sim.address, multiplexed=request.param == "multiplexed") as c:
        yield c


def play_reference(client: UserSimClient, task: pb.Task) -> list[upb.UserTurn]:
    """A scripted agent replays the task's reference turns; tool calls run in an in-process environment."""
    with client.conversation(task) as conversation:
        episode = replay_reference(task, EnvSession(load_domain(task.domain), task=task), conversation)
    assert episode.reward is not None and episode.reward.value == 1.0, episode.reward
    return episode.user_turns


@pytest.mark.parametrize("domain", ["telecom", "retail", "airline"])
def test_reference_conversations_end_with_a_valid_stop(client: UserSimClient, domain: str) -> None:
    task = sample_tasks(domain)[0]
    turns = play_reference(client, task)
    assert all(t.validity.valid for t in turns), [list(t.validity.violations) for t in turns]
    assert turns[-1].stop and turns[-1].stop_reason != upb.STOP_REASON_UNSPECIFIED
    if domain == "telecom":
        assert any(t.tool_calls for t in turns)
        assert all(c.side == pb.TOOL_SIDE_USER for t in turns for c in t.tool_calls)


def test_same_task_same_conversation(client: UserSimClient) -> None:
    task = sample_tasks("retail")[1]
    first = [t.SerializeToString(deterministic=True) for t in play_reference(client, task)]
    again = [t.SerializeToString(deterministic=True) for t in play_reference(client, task)]
    assert first == again


def _raw(user_sim: ServiceProcess, *requests: upb.ConverseRequest, multiplexed: bool) -> list[upb.ConverseResponse]:
    """`requests` as a Converse stream, or as one key of a Conversations stream (an error is a KeyRpcError)."""
    with grpc.insecure_channel(user_sim.address) as channel:
        stub = user_sim_pb2_grpc.UserSimStub(channel)
        if not multiplexed:
            return list(stub.Converse(iter(requests), timeout=10))
        mux = Multiplexer(stub.Conversations, upb.ConverseFrame, service="user_sim")
        try:
            key = mux.open(timeout_s=10)
            return [key.send(request) for request in requests]
        finally:
            mux.close()


TOY = sample_tasks("toy")[0]


@pytest.mark.parametrize(
    ("requests", "code", "message"),
    [
        ([upb.ConverseRequest()], grpc.StatusCode.INVALID_ARGUMENT, "empty ConverseRequest"),
        (
            [upb.ConverseRequest(agent_message=upb.AgentMessage(content="hi"))],
            grpc.StatusCode.FAILED_PRECONDITION,
            "before 'open'",
        ),
        (
            [upb.ConverseRequest(open=upb.OpenConversation(task=TOY))] * 2,
            grpc.StatusCode.INVALID_ARGUMENT,
            "already has a conversation",
        ),
        (
            [upb.ConverseRequest(open=upb.OpenConversation(task=pb.Task(id="x", domain="atlantis")))],
            grpc.StatusCode.NOT_FOUND,
            "unknown domain",
        ),
        (
            [upb.ConverseRequest(open=upb.OpenConversation(task=pb.Task(id="x")))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "needs a task with a domain",
        ),
        (
            [
                upb.ConverseRequest(open=upb.OpenConversation(task=TOY)),
                upb.ConverseRequest(tool_results=upb.UserToolResults(results=[pb.ToolResult(call_id="nope")])),
            ],
            grpc.StatusCode.FAILED_PRECONDITION,
            "",
        ),
    ],
    ids=["empty", "message-before-open", "open-twice", "unknown-domain", "no-domain", "unrequested-tool-results"],
)
@pytest.mark.parametrize("multiplexed", [False, True], ids=["stream", "multiplexed"])
def test_protocol_violations_get_status_codes(
    user_sim: ServiceProcess,
    requests: list[upb.ConverseRequest],
    code: grpc.StatusCode,
    message: str,
    multiplexed: bool,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _raw(user_sim, *requests, multiplexed=multiplexed)
    assert err.value.code() == code
    assert message in err.value.details()


def test_message_after_stop_is_refused(user_sim: ServiceProcess, client: UserSimClient) -> None:
    task = sample_tasks("retail")[0]
    with client.conversation(task, max_turns=1) as conversation:
        turn = conversation.turn
        while not turn.stop:
            turn = conversation.agent_message("Done, anything else?")
        with pytest.raises(grpc.RpcError) as err:
            conversation.agent_message("one more thing")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_metrics_track_conversations_and_stops(user_sim: ServiceProcess, client: UserSimClient) -> None:
    stops = user_sim.metric("eigenloop_user_sim_stops_total")
    play_reference(client, sample_tasks("telecom")[0])
    assert user_sim.metric("eigenloop_user_sim_stops_total") == stops + 1
    assert user_sim.metric("eigenloop_user_sim_turn_seconds_count") > 0
    assert wait_for(lambda: user_sim.metric("eigenloop_user_sim_conversations_active") == 0)


def _chat(client: UserSimClient, task: pb.Task, turns: int, started: threading.Barrier | None = None) -> str:
    with client.conversation(task, max_turns=turns + 5) as conversation:
        if started is not None:
            started.wait(timeout=30)
        for _ in range(turns):
            conversation.agent_message("Could you tell me more?")
        return conversation.replica_id


def test_a_turn_over_the_deadline_fails_its_conversation_only() -> None:
    """Multiplexed: a key waits `timeout_s` for each turn; past it the conversation is a replica failure (the
    episode is retried elsewhere), its late turn is dropped, and the stream serves the next conversation."""
    with (
        ServiceProcess(USER_SIM, ["--turn-latency-s", "1.0"]) as slow,
        UserSimClient(slow.address, multiplexed=True, timeout_s=0.2) as client,
    ):
        with pytest.raises(ReplicaFailedError, match="DEADLINE_EXCEEDED"):
            client.conversation(TOY)
        client.timeout_s = 10
        with client.conversation(TOY) as conversation:
            assert conversation.turn.content
        assert wait_for(lambda: slow.metric("eigenloop_user_sim_conversations_active") == 0)
        assert slow.metric("eigenloop_grpc_server_started_total", grpc_method="Conversations") == 1


@pytest.mark.parametrize("multiplexed", [False, True], ids=["stream", "multiplexed"])
def test_conversations_spread_over_replicas_and_a_killed_replica_fails_only_its_own(multiplexed: bool) -> None:
    flags = ["--turn-latency-s", "0.05"]
    with (
        ServiceProcess(USER_SIM, flags) as a,
        ServiceProcess(USER_SIM, flags) as b,
        ServiceProcess(USER_SIM, flags) as c,
        UserSimClient([a.address, b.address, c.address], multiplexed=multiplexed) as client,
    ):
        task = sample_tasks("toy")[0]
        outcomes: list[str] = []
        lock = threading.Lock()

        def run(barrier: threading.Barrier | None, turns: int) -> None:
            try:
                replica = _chat(client, task, turns, barrier)
            except ReplicaFailedError as exc:
                replica = f"failed:{exc.address}"
            with lock:
                outcomes.append(replica)

        barrier = threading.Barrier(61)
        threads = [threading.Thread(target=run, args=(barrier, 3)) for _ in range(60)]
        for t in threads:
            t.start()
        barrier.wait(timeout=60)  # all 60 conversations are open and spread
        for t in threads:
            t.join(timeout=60)
        served = Counter(outcomes)
        assert sum(served.values()) == 60 and len(served) == 3 and min(served.values()) >= 15, served

        outcomes.clear()
        barrier = threading.Barrier(31)
        threads = [threading.Thread(target=run, args=(barrier, 20)) for _ in range(30)]
        for t in threads:
            t.start()
        barrier.wait(timeout=60)
        b.proc.kill()  # a replica dies mid-conversation
        for t in threads:
            t.join(timeout=60)
        failed = [o for o in outcomes if o.startswith("failed:")]
        assert len(outcomes) == 30
        assert failed and all(o == f"failed:{b.address}" for o in failed)
        assert len(failed) <= 12  # only its own share; the others finished


def test_llm_policy_over_an_openai_compatible_endpoint() -> None:
    """The service with `policy: llm` talks to an OpenAI-compatible server (a fake on loopback)."""
    from tests.llm_fixtures import FakeOpenAIServer, error_response, text_response

    server = FakeOpenAIServer(default=text_response("I need to cancel my order O10001, please.")).start()
    try:
        llm = json.dumps({"kind": "openai", "model": "user-model", "base_url": server.base_url, "max_retries": 0})
        with (
            ServiceProcess(USER_SIM, ["--policy", "llm"], env={"EIGENLOOP_USER_SIM_LLM": llm}) as service,
            UserSimClient(service.address) as client,
        ):
            task = sample_tasks("toy")[0]
            with client.conversation(task) as conversation:
                assert conversation.turn.content.startswith("I need to cancel")
                assert conversation.turn.validity.valid
                server.push(text_response("Thanks, that's all. ###STOP###"))
                done = conversation.agent_message("Your order is cancelled.")
                assert done.stop and done.stop_reason == upb.STOP_REASON_GOAL_MET
            assert server.requests and server.requests[0].body["model"] == "user-model"
            assert server.requests[0].body["messages"][0]["role"] == "system"
            server.push(error_response(500, "engine crashed"))
            with pytest.raises(ReplicaFailedError, match="UNAVAILABLE: user backend failed"):
                client.conversation(task)  # a backend failure is an infrastructure failure, not a bad turn
    finally:
        server.close()


def test_llm_policy_with_a_local_transformers_model(tmp_path: pytest.TempPathFactory) -> None:
    """The service loads a local model (built here from a config) and answers; its turns are checked."""
    from pathlib import Path

    from tests.llm_fixtures import build_tiny_chat_model

    # The full user prompt (scenario + rules) is ~1450 tokens with this model's 400-token vocabulary; a prompt
    # that fills the context is a BackendError (an infrastructure failure), so the context must hold it.
    model = build_tiny_chat_model(Path(str(tmp_path)) / "user-model", max_position_embeddings=2048)
    llm = json.dumps({"kind": "transformers", "model": str(model)})
    sampling = pb.SamplingParams(max_new_tokens=8)
    with (
        ServiceProcess(USER_SIM, ["--policy", "llm"], env={"EIGENLOOP_USER_SIM_LLM": llm}) as service,
        UserSimClient(service.address) as client,
        client.conversation(sample_tasks("toy")[0], sampling=sampling) as conversation,
    ):
        turn = conversation.turn
        # An untrained model's output is whatever it is; the point is that it came back and was judged.
        assert turn.validity.valid or list(turn.validity.violations)
        assert conversation.replica_id
