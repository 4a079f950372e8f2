"""Faults injected into real local services while episodes run (a scripted agent replaying retail reference
dialogues), and what became of every episode: the affected ones fail as infrastructure failures (never scored)
and complete on a retry elsewhere; the unaffected ones complete; the servers that were not killed stay healthy.

Tried: a user_sim replica SIGKILLed mid-episode (ReplicaPool client, two replicas); a toolenv replica SIGKILLed
mid-episode (two replicas); the user's LLM backend failing (HTTP 503 through every retry) and hanging past its
timeout mid-conversation; inference generating past the client's deadline; a JSONL writer SIGKILLed mid-write,
again and again, with every file read back.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import inference_pb2 as ipb
from eigenloop.contracts.v1 import inference_pb2_grpc
from eigenloop.data import read_tasks
from eigenloop.domains import sample_tasks
from eigenloop.env.remote import RemoteSession, ToolEnvClient
from eigenloop.launcher import health
from eigenloop.rollout.scripted import replay_reference
from eigenloop.rpc.stream import StreamClosedError
from eigenloop.usersim.remote import RemoteConversation, ReplicaFailedError, UserSimClient
from tests.reliability.conftest import Trials
from tests.reliability.faults import LocalStack, Outcomes
from tests.support import ServiceProcess

TASKS = sample_tasks("retail")[:4]  # reference dialogues with several user exchanges each


def play(task: pb.Task, env: RemoteSession, user: RemoteConversation, hook: Callable[[pb.Message], None]) -> float:
    """One scripted episode; a clean end closes both streams, a failure cancels them."""
    with env, user:
        episode = replay_reference(task, env, user, hook)
    assert episode.reward is not None
    return episode.reward.value


def after_messages(count: int, fault: Callable[[], object]) -> Callable[[pb.Message], None]:
    """A message hook that injects `fault` once, right after the episode's `count`-th message."""
    seen = 0

    def hook(message: pb.Message) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            fault()

    return hook


def no_fault(message: pb.Message) -> None:
    pass


def healthy(address: str) -> bool:
    return health(address, timeout_s=5) == "SERVING"


@pytest.fixture()
def stack() -> Iterator[LocalStack]:
    with LocalStack() as s:
        yield s


def test_user_sim_replica_killed_mid_episode(stack: LocalStack, trials: Trials) -> None:
    stack.start("toolenv")
    stack.start("user_sim", replicas=2)
    tasks = TASKS * 2
    with ToolEnvClient(stack.addresses("toolenv")[0]) as envs, UserSimClient(stack.addresses("user_sim")) as users:
        # Every episode is open before the fault, so those on the killed replica are all mid-conversation.
        opened = [(task, envs.session(task=task), users.conversation(task)) for task in tasks]
        victim = opened[0][2].address
        affected = sum(conversation.address == victim for _, _, conversation in opened)
        kill = after_messages(2, lambda: stack.kill("user_sim", stack.addresses("user_sim").index(victim)))
        outcomes = Outcomes()
        for index, (task, session, conversation) in enumerate(opened):

            def attempt(
                number: int,
                task: pb.Task = task,
                hook: Callable[[pb.Message], None] = kill if index == 0 else no_fault,
                first: tuple[RemoteSession, RemoteConversation] = (session, conversation),
            ) -> float:
                if number == 0:
                    return play(task, *first, hook)
                return play(task, envs.session(task=task), users.conversation(task, avoid=[victim]), no_fault)

            outcomes.run(attempt, lambda exc: isinstance(exc, ReplicaFailedError))
    trials.record("faults", f"SIGKILL 1 of 2 user_sim replicas mid-episode, {len(tasks)} episodes", outcomes.summary())
    assert 0 < affected < len(tasks)
    assert outcomes.counts == {
        "completed": len(tasks) - affected,
        "infrastructure-failed": affected,
        "completed on retry": affected,
    }
    assert outcomes.rewards == [1.0] * len(tasks)
    assert healthy(stack.addresses("toolenv")[0])


def is_toolenv_failure(exc: BaseException) -> bool:
    if isinstance(exc, StreamClosedError):
        return True
    return isinstance(exc, grpc.RpcError) and exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def test_toolenv_killed_mid_episode(stack: LocalStack, trials: Trials) -> None:
    stack.start("toolenv", replicas=2)
    stack.start("user_sim")
    a, b = stack.addresses("toolenv")
    with (
        ToolEnvClient(a) as on_a,
        ToolEnvClient(b) as on_b,
        ToolEnvClient([a, b]) as on_any,  # retries: round-robin skips the dead replica
        UserSimClient(stack.addresses("user_sim")) as users,
    ):
        placed = [(task, on_a if i % 2 == 0 else on_b) for i, task in enumerate(TASKS)]
        opened = [(task, client.session(task=task), users.conversation(task)) for task, client in placed]
        kill = after_messages(1, lambda: stack.kill("toolenv", 0))
        outcomes = Outcomes()
        for index, (task, session, conversation) in enumerate(opened):

            def attempt(
                number: int,
                task: pb.Task = task,
                hook: Callable[[pb.Message], None] = kill if index == 0 else no_fault,
                first: tuple[RemoteSession, RemoteConversation] = (session, conversation),
            ) -> float:
                if number == 0:
                    return play(task, *first, hook)
                return play(task, on_any.session(task=task), users.conversation(task), no_fault)

            outcomes.run(attempt, is_toolenv_failure, retries=2)
    trials.record("faults", f"SIGKILL 1 of 2 toolenv replicas mid-episode, {len(TASKS)} episodes", outcomes.summary())
    affected = len(TASKS) // 2
    assert outcomes.counts == {
        "completed": len(TASKS) - affected,
        "infrastructure-failed": affected,
        "completed on retry": affected,
    }
    assert outcomes.rewards == [1.0] * len(TASKS)
    assert healthy(b) and healthy(stack.addresses("user_sim")[0])


def test_user_llm_backend_fails_and_hangs_mid_conversation(trials: Trials) -> None:
    from tests.llm_fixtures import FakeOpenAIServer, FakeResponse, chat_body, error_response, text_response

    backend = FakeOpenAIServer(default=text_response("I need to cancel my order, please.")).start()
    llm = {"kind": "openai", "model": "user", "base_url": backend.base_url, "max_retries": 1, "timeout_s": 1.0}
    llm |= {"initial_backoff_s": 0.0}
    task = TASKS[0]
    try:
        with (
            ServiceProcess(
                "eigenloop_user_sim.server", ["--policy", "llm"], {"EIGENLOOP_USER_SIM_LLM": json.dumps(llm)}
            ) as user_sim,
            UserSimClient(user_sim.address) as users,
        ):
            for fault, responses in {
                "the user's LLM backend answers 503 through every retry": [error_response(503, "overloaded")] * 2,
                "the user's LLM backend hangs past its timeout": [FakeResponse(200, chat_body("late"), delay_s=30)] * 2,
            }.items():
                conversation = users.conversation(task)  # the opening turn works
                backend.push(*responses)
                with pytest.raises(ReplicaFailedError) as failure:
                    conversation.agent_message("How can I help?")
                outcome = str(failure.value).split(": ", 1)[1]
                trials.record("faults", f"{fault}, mid-conversation", f"infrastructure-failed (...{outcome[-70:]})")
                assert "UNAVAILABLE: user backend failed" in outcome
            # The backend is back: the replica itself never broke.
            with users.conversation(task) as conversation:
                assert conversation.agent_message("How can I help?").content
            assert healthy(user_sim.address)
    finally:
        backend.close()


def test_inference_past_the_client_deadline(inference: ServiceProcess, trials: Trials) -> None:
    long = ipb.GenerateRequest(prompt_token_ids=[5, 17, 30], sampling=pb.SamplingParams(max_new_tokens=40))
    short = ipb.GenerateRequest(prompt_token_ids=[5, 17, 30], sampling=pb.SamplingParams(max_new_tokens=2))
    with grpc.insecure_channel(inference.address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        codes = []
        for _ in range(5):
            try:
                list(stub.Generate(long, timeout=0.01))
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
        trials.record(
            "faults",
            "inference: Generate with a deadline shorter than the generation (x5)",
            ", ".join(sorted(set(codes))),
        )
        assert set(codes) <= {"DEADLINE_EXCEEDED", "OK"} and "DEADLINE_EXCEEDED" in codes
        # The abandoned generations do not wedge the batcher: the next request is served.
        assert len([t for r in stub.Generate(short, timeout=30) for t in r.token_ids]) == 2
    assert healthy(inference.address)


WRITER = """
import sys
from pathlib import Path
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import write_jsonl

path, records = Path(sys.argv[1]), int(sys.argv[2])
generation = 0
while True:
    generation += 1
    tasks = (pb.Task(id=f"g{generation}-{i}", domain="toy", description="x" * (i % 500)) for i in range(records))
    write_jsonl(path, tasks)
"""


def test_jsonl_writer_killed_mid_write(tmp_path: Path, trials: Trials) -> None:
    path, records, kills = tmp_path / "tasks.jsonl", 3000, 12
    rng = random.Random(0)
    generations = set()
    for _ in range(kills):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(records)])
        time.sleep(rng.uniform(0.3, 1.2))  # somewhere inside some write: a write takes a fraction of a second
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        if not path.exists():
            continue  # killed before its first complete write: nothing was ever published
        tasks = read_tasks(path)  # raises on any half-written line
        assert len(tasks) == records
        assert len({t.id.split("-")[0] for t in tasks}) == 1  # one whole generation, never a mix
        generations.add(tasks[0].id.split("-")[0])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    trials.record(
        "faults",
        f"SIGKILL a JSONL writer mid-write, {kills} times, every file read back",
        f"never a half record ({len(leftovers)} unpublished temp files left, ignored by readers)",
    )
    assert path.exists() and generations
