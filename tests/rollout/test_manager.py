"""The rollout manager with a scripted policy and in-process services: the episode flow, limits, failures,
grouping and staleness.

Tried: a tool call then an answer (toy order status: reward 1, masks cover exactly the sampled ids); a malformed
tool call (tool error turn, format_errors 1, the episode goes on); max_turns / max_tokens / a turn deadline
(TRUNCATED, cause recorded, still scored); an environment that fails once (retried on another replica, attempt 2)
or always (INFRA_FAILED, no reward, counted dropped); 5 tasks x G=3 with 4 in flight (every group complete, never
more than 4 policy calls at once); stale groups dropped or rerun; a chat template that cannot be applied
incrementally (raised to the consumer); the asyncio iterator.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import pytest

pytest.importorskip("transformers")

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import sample_tasks
from eigenloop.rollout.episode import MALFORMED_CALL, EpisodeConfig
from eigenloop.rollout.failures import TurnDeadlineError
from eigenloop.rollout.manager import Group, RolloutConfig, RolloutManager
from eigenloop.rollout.policy import Sample
from eigenloop.rollout.services import Environments, LocalEnvironments, LocalUsers
from eigenloop.rollout.tokens import TemplateError, read_policy_turn
from eigenloop.usersim.policies import ProceduralUser
from tests.rollout.conftest import toy_task
from tests.rollout.fakes import FlakyEnvironments, ScriptedPolicy

LOOKUP = '<tool_call>{"name": "get_order", "arguments": {"order_id": "O10003"}}</tool_call>'
ANSWER = "Order O10003 has been delivered."


def play(
    policy: Any,
    tasks: Sequence[pb.Task],
    tokenizer: Any,
    *,
    environments: Environments | None = None,
    **config: Any,
) -> tuple[list[Group], RolloutManager]:
    config.setdefault("group_size", 1)
    with RolloutManager(
        policy, environments or LocalEnvironments(), LocalUsers(ProceduralUser()), tokenizer, RolloutConfig(**config)
    ) as manager:
        return list(manager.rollout(tasks)), manager


def only(groups: list[Group]) -> pb.Trajectory:
    assert len(groups) == 1 and len(groups[0].trajectories) == 1
    return groups[0].trajectories[0]


def test_a_tool_call_then_an_answer_is_scored_and_masked(tokenizer: Any) -> None:
    policy = ScriptedPolicy(tokenizer, [LOOKUP, ANSWER], version=lambda n: 7)
    groups, manager = play(policy, [toy_task("toy-order-status")], tokenizer)
    trajectory = only(groups)
    assert trajectory.status == pb.EPISODE_STATUS_COMPLETED and trajectory.termination == "user_stop"
    assert trajectory.reward.value == 1.0
    roles = [m.role for m in trajectory.messages]
    assert roles == [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL, pb.ROLE_ASSISTANT, pb.ROLE_USER]
    assert trajectory.messages[1].tool_calls[0].name == "get_order"
    assert '"status": "delivered"' in trajectory.messages[2].content

    trace = trajectory.tokens
    mask = list(trace.policy_mask)
    assert [(t.policy_version, t.end - t.start) for t in trace.turns] == [
        (7, len(tokenizer.encode(text, add_special_tokens=False)) + 1) for text in (LOOKUP, ANSWER)
    ]
    in_spans = [any(t.start <= i < t.end for t in trace.turns) for i in range(len(mask))]
    assert mask == [int(x) for x in in_spans]
    assert [lp for lp, m in zip(trace.logprobs, mask, strict=True) if m] == [-0.25] * sum(mask)
    assert not any(lp for lp, m in zip(trace.logprobs, mask, strict=True) if not m)
    # The policy saw exactly the sequence recorded before each of its turns.
    for prompt, turn in zip(policy.prompts, trace.turns, strict=True):
        assert list(trace.token_ids[: turn.start]) == prompt
    assert manager.stats.completed == 1 and manager.stats.groups == 1
    assert manager.policy_version == 7


def test_a_malformed_tool_call_gets_a_tool_error_turn_and_counts(tokenizer: Any) -> None:
    policy = ScriptedPolicy(tokenizer, ['<tool_call>{"name": "get_order", "arguments": </tool_call>', ANSWER])
    groups, manager = play(policy, [toy_task("toy-order-status")], tokenizer)
    trajectory = only(groups)
    assert trajectory.format_errors == 1 and manager.stats.format_errors == 1
    error = trajectory.messages[2]
    assert error.role == pb.ROLE_TOOL and error.tool_result.error and error.content == MALFORMED_CALL
    assert error.tool_result.error_kind == pb.TOOL_ERROR_KIND_INVALID_JSON
    assert trajectory.messages[3].content == ANSWER
    assert trajectory.status == pb.EPISODE_STATUS_COMPLETED


@pytest.mark.parametrize(
    ("limits", "termination"),
    [
        ({"max_turns": 2}, "max_turns"),  # the policy only ever calls tools
        ({"max_tokens": 700}, "max_tokens"),  # the prompt alone is about 630 tokens
    ],
)
def test_limits_truncate_and_are_still_scored(tokenizer: Any, limits: dict[str, int], termination: str) -> None:
    policy = ScriptedPolicy(tokenizer, [LOOKUP])
    groups, manager = play(
        policy, [toy_task("toy-order-status")], tokenizer, episode=EpisodeConfig(system_prompt="", **limits)
    )
    trajectory = only(groups)
    assert (trajectory.status, trajectory.termination) == (pb.EPISODE_STATUS_TRUNCATED, termination)
    assert trajectory.HasField("reward")
    assert len(trajectory.tokens.token_ids) <= limits.get("max_tokens", 10**9)
    assert manager.stats.truncated == 1


def test_a_turn_past_its_deadline_truncates(tokenizer: Any) -> None:
    class Slow(ScriptedPolicy):
        def generate(self, prompt_ids: Sequence[int], sampling: pb.SamplingParams, timeout_s: float) -> Sample:
            if self.calls:
                raise TurnDeadlineError(f"no completion within {timeout_s}s")
            return super().generate(prompt_ids, sampling, timeout_s)

    trajectory = only(play(Slow(tokenizer, [LOOKUP]), [toy_task("toy-order-status")], tokenizer)[0])
    assert (trajectory.status, trajectory.termination) == (pb.EPISODE_STATUS_TRUNCATED, "turn_deadline")
    assert len(trajectory.tokens.turns) == 1


def test_an_infrastructure_failure_is_retried_elsewhere(tokenizer: Any) -> None:
    environments = FlakyEnvironments(fail=lambda n: n == 0)
    groups, manager = play(
        ScriptedPolicy(tokenizer, [LOOKUP, ANSWER]),
        [toy_task("toy-order-status")],
        tokenizer,
        environments=environments,
    )
    trajectory = only(groups)
    assert trajectory.status == pb.EPISODE_STATUS_COMPLETED and trajectory.attempt == 2
    assert environments.avoided == [[], ["bad:1"]]
    assert manager.stats.failed_attempts == 1 and manager.stats.dropped == 0


def test_an_episode_failing_every_attempt_is_dropped_never_scored(tokenizer: Any) -> None:
    environments = FlakyEnvironments(fail=lambda n: True)
    groups, manager = play(
        ScriptedPolicy(tokenizer, [ANSWER]),
        [toy_task("toy-order-status")],
        tokenizer,
        environments=environments,
        max_attempts=3,
    )
    trajectory = only(groups)
    assert trajectory.status == pb.EPISODE_STATUS_INFRA_FAILED
    assert not trajectory.HasField("reward")
    assert trajectory.attempt == 3 and "UNAVAILABLE" in trajectory.termination
    assert groups[0].scored == []
    assert (manager.stats.dropped, manager.stats.failed_attempts, manager.stats.episodes) == (1, 3, 1)


def test_groups_are_complete_and_concurrency_is_bounded(tokenizer: Any) -> None:
    tasks = sample_tasks("toy") + sample_tasks("toy")[:1]  # a task twice: two groups
    policy = ScriptedPolicy(tokenizer, [ANSWER])
    groups, manager = play(policy, tasks, tokenizer, group_size=3, max_in_flight=4)
    assert sorted(g.task.id for g in groups) == sorted(t.id for t in tasks)
    assert len({g.group_id for g in groups}) == len(tasks)
    for group in groups:
        assert [t.sample_index for t in group.trajectories] == [0, 1, 2]
        assert {t.group_id for t in group.trajectories} == {group.group_id}
        assert all(t.task_id == group.task.id for t in group.trajectories)
    assert policy.max_in_flight <= 4
    assert manager.stats.episodes == 3 * len(tasks) == manager.stats.groups * 3


def test_stale_groups_are_dropped(tokenizer: Any) -> None:
    policy = ScriptedPolicy(tokenizer, [ANSWER], version=lambda n: 0)
    manager = RolloutManager(
        policy,
        LocalEnvironments(),
        LocalUsers(ProceduralUser()),
        tokenizer,
        RolloutConfig(group_size=2, max_staleness=1, episode=EpisodeConfig(max_turns=1)),
    )
    manager.set_policy_version(2)
    assert list(manager.rollout(sample_tasks("toy")[:2])) == []
    assert manager.stats.stale_dropped == 2 and manager.stats.groups == 0
    manager.close()


def test_stale_groups_can_be_rerun_with_the_current_policy(tokenizer: Any) -> None:
    # One generate per episode (max_turns 1): the first episode samples with version 0, the rerun with 2.
    policy = ScriptedPolicy(tokenizer, [ANSWER], version=lambda n: 0 if n == 0 else 2)
    manager = RolloutManager(
        policy,
        LocalEnvironments(),
        LocalUsers(ProceduralUser()),
        tokenizer,
        RolloutConfig(group_size=1, max_staleness=1, on_stale="rerun", episode=EpisodeConfig(max_turns=1)),
    )
    manager.set_policy_version(2)
    groups = list(manager.rollout([toy_task("toy-order-status")]))
    assert [g.oldest_policy_version for g in groups] == [2]
    assert manager.stats.stale_rerun == 1 and policy.calls == 2
    manager.close()


def test_a_template_error_reaches_the_consumer(tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        tokenizer,
        "chat_template",
        "{% for m in messages %}[{{ messages | length }}] {{ m.content }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}",
    )
    with pytest.raises(TemplateError, match="prefix-stable"):
        play(ScriptedPolicy(tokenizer, [ANSWER]), [toy_task("toy-order-status")], tokenizer)


def test_groups_through_asyncio(tokenizer: Any) -> None:
    async def collect() -> list[Group]:
        with RolloutManager(
            ScriptedPolicy(tokenizer, [ANSWER]),
            LocalEnvironments(),
            LocalUsers(ProceduralUser()),
            tokenizer,
            RolloutConfig(group_size=2),
        ) as manager:
            return [g async for g in manager.arollout(sample_tasks("toy"))]

    groups = asyncio.run(collect())
    assert sorted(g.task.id for g in groups) == sorted(t.id for t in sample_tasks("toy"))


def test_policy_turns_read_back_as_the_recorded_messages(tokenizer: Any) -> None:
    trajectory = only(play(ScriptedPolicy(tokenizer, [LOOKUP, ANSWER]), [toy_task("toy-order-status")], tokenizer)[0])
    assistants = [m for m in trajectory.messages if m.role == pb.ROLE_ASSISTANT]
    for turn, message in zip(trajectory.tokens.turns, assistants, strict=True):
        assert read_policy_turn(tokenizer, trajectory.tokens.token_ids[turn.start : turn.end]).message == message


def test_an_endless_task_stream_stops_when_the_consumer_stops(tokenizer: Any) -> None:
    manager = RolloutManager(
        ScriptedPolicy(tokenizer, [ANSWER]),
        LocalEnvironments(),
        LocalUsers(ProceduralUser()),
        tokenizer,
        RolloutConfig(group_size=2, max_in_flight=4, max_ready_groups=2),
    )
    groups = manager.rollout(itertools.cycle(sample_tasks("toy")))
    taken = [next(groups) for _ in range(3)]
    groups.close()
    manager.close()  # returns: the dispatcher stopped and the running episodes finished
    assert len(taken) == 3
    # Played ahead by at most max_ready_groups while the consumer held on, never without bound.
    assert manager.stats.episodes <= 2 * (3 + 2 + 2)
