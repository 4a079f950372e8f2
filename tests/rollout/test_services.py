"""Episodes end to end through real toolenv, user_sim and inference processes on loopback, with a tiny model.

Tried: toy tasks x G=2 sampled at temperature 1 through gRPC (every episode finishes and is scored; rebuilding
the token sequence from the recorded messages and the sampled spans gives the same ids and mask; each policy
span reads back as its assistant message; logprobs recomputed by a forward pass of the same weights match
inference's); the same greedy episodes embedded (engine, toolenv and user in this process) and distributed give
identical trajectories; a user_sim replica killed mid-episode (its episodes fail, are retried on the other
replica and complete; the others finish on their first attempt).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from eigenloop.contracts.v1 import common_pb2 as pb  # noqa: E402
from eigenloop.domains import sample_tasks  # noqa: E402
from eigenloop.rollout.episode import EpisodeConfig  # noqa: E402
from eigenloop.rollout.manager import Group, RolloutConfig, RolloutManager  # noqa: E402
from eigenloop.rollout.policy import LocalPolicy, RemotePolicy  # noqa: E402
from eigenloop.rollout.services import LocalEnvironments, LocalUsers, RemoteEnvironments, RemoteUsers  # noqa: E402
from eigenloop.rollout.tokens import DialogueTokens, read_policy_turn  # noqa: E402
from eigenloop.usersim.policies import ProceduralUser  # noqa: E402
from tests.support import TEST_DEVICE, ServiceProcess, wait_for  # noqa: E402

TOOLENV, USER_SIM, INFERENCE = "eigenloop_toolenv.server", "eigenloop_user_sim.server", "eigenloop_inference.server"
EPISODE = EpisodeConfig(max_turns=3, max_new_tokens=16, max_tokens=4096)


@pytest.fixture(scope="module")
def toolenv() -> Iterator[ServiceProcess]:
    with ServiceProcess(TOOLENV) as service:
        yield service


@pytest.fixture(scope="module")
def inference(tiny_model_dir: Path) -> Iterator[ServiceProcess]:
    args = ["--model", str(tiny_model_dir), "--http-port", "-1", "--max-batch-size", "16", "--batch-window-ms", "5"]
    args += ["--device", TEST_DEVICE]
    with ServiceProcess(INFERENCE, args) as service:
        yield service


@pytest.fixture(scope="module")
def user_sim() -> Iterator[ServiceProcess]:
    with ServiceProcess(USER_SIM) as service:
        yield service


def distributed(
    toolenv: ServiceProcess, users: RemoteUsers, inference: ServiceProcess, tokenizer: Any, **config: Any
) -> RolloutManager:
    return RolloutManager(
        RemotePolicy(inference.address), RemoteEnvironments(toolenv.address), users, tokenizer, RolloutConfig(**config)
    )


def trajectories(groups: list[Group]) -> list[pb.Trajectory]:
    return sorted((t for g in groups for t in g.trajectories), key=lambda t: (t.task_id, t.sample_index))


def rebuilt(tokenizer: Any, trajectory: pb.Trajectory, tools: list[pb.ToolSchema], system: str) -> DialogueTokens:
    """The token sequence made again from the recorded messages, with each policy turn's sampled ids."""
    dialogue = DialogueTokens(tokenizer, tools, system)
    spans = iter(trajectory.tokens.turns)
    ids, logprobs = list(trajectory.tokens.token_ids), list(trajectory.tokens.logprobs)
    block: list[pb.Message] = []
    for message in trajectory.messages:
        if message.role != pb.ROLE_ASSISTANT:
            block.append(message)
            continue
        dialogue.extend(block)
        block = []
        span = next(spans)
        dialogue.add_policy_turn(
            ids[span.start : span.end], logprobs[span.start : span.end], span.policy_version, message
        )
    dialogue.extend(block)
    return dialogue


def test_distributed_episodes_keep_exact_tokens_and_logprobs(
    toolenv: ServiceProcess, inference: ServiceProcess, user_sim: ServiceProcess, tokenizer: Any, tiny_model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from eigenloop.domains import load_domain
    from eigenloop.protocol import tool_schema

    with distributed(toolenv, RemoteUsers(user_sim.address), inference, tokenizer, group_size=2, episode=EPISODE) as m:
        groups = list(m.rollout(sample_tasks("toy")))
    assert len(groups) == len(sample_tasks("toy"))
    assert m.stats.dropped == 0 and m.stats.failed_attempts == 0
    domain = load_domain("toy")
    tools = [tool_schema(t) for t in domain.agent_tools]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), local_files_only=True).eval()
    for trajectory in trajectories(groups):
        assert trajectory.status in (pb.EPISODE_STATUS_COMPLETED, pb.EPISODE_STATUS_TRUNCATED), trajectory.termination
        assert trajectory.HasField("reward") and trajectory.tokens.turns
        trace = trajectory.tokens
        again = rebuilt(tokenizer, trajectory, tools, domain.policy)
        assert again.token_ids == list(trace.token_ids)
        assert again.policy_mask == list(trace.policy_mask)
        assert sum(trace.policy_mask) == sum(t.end - t.start for t in trace.turns)
        assistants = [msg for msg in trajectory.messages if msg.role == pb.ROLE_ASSISTANT]
        for span, message in zip(trace.turns, assistants, strict=True):
            assert read_policy_turn(tokenizer, trace.token_ids[span.start : span.end]).message == message

        with torch.no_grad():
            logits = model(torch.tensor([list(trace.token_ids)])).logits[0].float()
        recomputed = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(trace.token_ids[1:])[:, None])[:, 0]
        mask = torch.tensor(list(trace.policy_mask[1:]), dtype=torch.bool)
        served = torch.tensor(list(trace.logprobs[1:]))
        assert torch.allclose(recomputed[mask], served[mask], atol=2e-4), (recomputed[mask] - served[mask]).abs().max()


def test_embedded_and_distributed_episodes_are_identical(
    toolenv: ServiceProcess, inference: ServiceProcess, user_sim: ServiceProcess, tokenizer: Any, tiny_model_dir: Path
) -> None:
    from eigenloop.inference.engine import TransformersEngine

    greedy = EpisodeConfig(max_turns=3, max_new_tokens=16, temperature=0.0)
    tasks = sample_tasks("toy")
    with distributed(toolenv, RemoteUsers(user_sim.address), inference, tokenizer, group_size=1, episode=greedy) as m:
        remote = trajectories(list(m.rollout(tasks)))
    engine = TransformersEngine(tiny_model_dir, max_batch_size=16)
    try:
        config = RolloutConfig(group_size=1, episode=greedy)
        users = LocalUsers(ProceduralUser())
        with RolloutManager(LocalPolicy(engine), LocalEnvironments(), users, tokenizer, config) as m:
            local = trajectories(list(m.rollout(tasks)))
    finally:
        engine.close()
    assert [t.messages for t in local] == [t.messages for t in remote]
    assert [t.tokens.token_ids for t in local] == [t.tokens.token_ids for t in remote]
    assert [t.reward.value for t in local] == [t.reward.value for t in remote]


def test_a_generate_on_a_dead_inference_replica_is_retried_on_another(inference: ServiceProcess) -> None:
    from eigenloop.launcher import HOST, free_port

    dead = f"{HOST}:{free_port()}"  # nothing listens there
    policy = RemotePolicy([dead, inference.address])
    try:
        sampling = pb.SamplingParams(temperature=0.0, max_new_tokens=4)
        samples = [policy.generate([5, 6, 7], sampling, timeout_s=30) for _ in range(4)]
        assert all(len(s.token_ids) == 4 for s in samples)
        assert policy.pool.load()[dead][1] >= 1  # it was tried, and the call went on to the live replica
    finally:
        policy.close()


def test_a_generate_past_the_turn_deadline_is_a_deadline_not_a_failure(inference: ServiceProcess) -> None:
    from eigenloop.rollout.failures import TurnDeadlineError

    with closing(RemotePolicy(inference.address)) as policy, pytest.raises(TurnDeadlineError, match="no completion"):
        policy.generate([5, 6, 7], pb.SamplingParams(max_new_tokens=500), timeout_s=0.001)


def test_a_user_sim_replica_killed_mid_episode_fails_only_its_episodes(
    toolenv: ServiceProcess, inference: ServiceProcess, tokenizer: Any
) -> None:
    slow = ["--turn-latency-s", "0.5"]
    with ServiceProcess(USER_SIM, slow) as a, ServiceProcess(USER_SIM, slow) as b:
        users = RemoteUsers([a.address, b.address])
        manager = distributed(toolenv, users, inference, tokenizer, group_size=2, max_in_flight=8, episode=EPISODE)
        groups: list[Group] = []
        runner = threading.Thread(target=lambda: groups.extend(manager.rollout(sample_tasks("toy"))))
        runner.start()
        assert wait_for(lambda: users.pool.load()[a.address][0] >= 2, timeout_s=30)
        a.proc.kill()
        runner.join(timeout=120)
        manager.close()
    assert not runner.is_alive()
    episodes = trajectories(groups)
    assert len(episodes) == 2 * len(sample_tasks("toy"))
    assert all(t.status != pb.EPISODE_STATUS_INFRA_FAILED for t in episodes)
    retried = [t for t in episodes if t.attempt > 1]
    assert retried, "no episode was on the killed replica"
    assert len(retried) < len(episodes), "every episode failed: the surviving replica should have served some"
    assert manager.stats.failed_attempts >= len(retried) and manager.stats.dropped == 0
    assert all(t.HasField("reward") for t in episodes)
