"""The generator: grounded, labelled, deterministic tasks; bad input refused up front; backend failures recorded.

Tried: an unknown domain; an empty prompt set, one missing an agent, one with an unknown settings key and one
with a non-JSON setting; a backend that fails twice then answers (retried), one that always fails or times out
(recorded per task, the round goes on), one that answers something that is not JSON; a state builder whose
setup action does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from eigenloop.checkers.mutate import evaluate_trajectory, gold_trajectory
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import task_content_hash
from eigenloop.domains import UnknownDomainError, load_domain
from eigenloop.llm.base import BackendError, ChatMessage, Completion, Usage
from eigenloop.llm.procedural import ProceduralBackend
from eigenloop.synthesis import prompts as P
from eigenloop.synthesis.agents import RetryPolicy
from eigenloop.synthesis.generator import TaskGenerator
from tests.synthesis.helpers import evolved, generator


def test_tasks_are_grounded_and_carry_provenance() -> None:
    settings = evolved("toy")
    out = list(generator().generate("toy", 6, 5, settings, 2))
    assert len(out) == 6
    domain = load_domain("toy")
    for generated in out:
        task = generated.task
        assert generated.cost.llm_calls == 4  # one call per agent
        p = task.provenance
        assert (p.source, p.backend, p.round, p.prompt_set_version) == ("generator", "procedural", 2, settings.version)
        assert p.content_hash == task_content_hash(task)
        tool_messages = [m for m in task.reference_dialogue if m.role == pb.ROLE_TOOL]
        assert len(tool_messages) == len(task.checker.gold_actions)  # every call ran and has its real result
        assert not any(m.tool_result.error for m in tool_messages)
        assert evaluate_trajectory(domain, task, gold_trajectory(task), env_seed=p.seed).value == 1.0


def test_same_seed_same_tasks_other_seed_other_tasks() -> None:
    def run(seed: int) -> list[bytes]:
        return [g.SerializeToString(deterministic=True) for g in _without_timing(seed)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def _without_timing(seed: int) -> list[Any]:
    out = list(generator().generate("toy", 4, seed, evolved("toy"), 1))
    for g in out:
        g.cost.seconds = 0
    return out


def test_bad_input_is_refused_before_anything_is_generated() -> None:
    with pytest.raises(UnknownDomainError, match="unknown domain 'atlantis'"):
        next(generator().generate("atlantis", 1, 0, evolved("toy"), 1))
    with pytest.raises(P.PromptSetError, match="empty"):
        next(generator().generate("toy", 1, 0, pb.PromptSet(domain="toy"), 1))
    missing = evolved("toy")
    del missing.agents[-1]
    with pytest.raises(P.PromptSetError, match="missing \\['checker_writer'\\]"):
        next(generator().generate("toy", 1, 0, missing, 1))
    typo = evolved("toy")
    typo.agents[0].settings["wrolds"] = "3"
    with pytest.raises(P.PromptSetError, match="wrolds"):
        next(generator().generate("toy", 1, 0, typo, 1))
    not_json = evolved("toy")
    not_json.agents[0].settings["worlds"] = "three"
    with pytest.raises(P.PromptSetError, match="not a JSON value"):
        next(generator().generate("toy", 1, 0, not_json, 1))


class FlakyBackend:
    """Fails (or times out, or babbles) on chosen calls, else answers like the procedural backend."""

    name = "flaky"

    def __init__(self, fail: Any) -> None:
        self.inner = ProceduralBackend()
        self.usage = Usage()
        self.fail = fail
        self.calls = 0

    def complete(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Completion:
        self.calls += 1
        problem = self.fail(self.calls, messages)
        if problem == "error":
            raise BackendError("503 from the endpoint")
        if problem == "timeout":
            raise TimeoutError("no answer in 60 s")
        completion = self.inner.complete(messages, **kwargs)
        self.usage.add(completion)
        if problem == "babble":
            return Completion("Sure! Here is your task:", (), "stop", 1, 1, self.name)
        return completion


def test_backend_errors_are_retried() -> None:
    backend = FlakyBackend(lambda n, _: "error" if n <= 2 else None)
    out = list(
        TaskGenerator(backend, retry=RetryPolicy(attempts=3, backoff_s=0.0)).generate("toy", 2, 0, evolved("toy"), 1)
    )
    assert all(g.HasField("task") for g in out)


@pytest.mark.parametrize("problem", ["error", "timeout", "babble"])
def test_a_failing_agent_fails_its_task_not_the_round(problem: str) -> None:
    def fail(_: int, messages: Sequence[ChatMessage]) -> str | None:
        return problem if '"agent": "dialogue_writer"' in messages[-1].content else None

    generator = TaskGenerator(FlakyBackend(fail), retry=RetryPolicy(attempts=2, backoff_s=0.0))
    out = list(generator.generate("toy", 3, 0, evolved("toy"), 1))
    assert len(out) == 3
    for generated in out:
        assert not generated.HasField("task")
        assert generated.failed_agent == "dialogue_writer"
        assert "after 2 attempts" in generated.failure_reason


def test_a_state_that_does_not_build_is_the_state_builders_failure() -> None:
    class BrokenSetup(ProceduralBackend):
        def complete(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Completion:
            if '"agent": "state_builder"' in messages[-1].content:
                text = '{"data_patch": {}, "actions": [{"name": "summon_order", "arguments": {}}]}'
                return Completion(text, (), "stop", 1, 1, self.name)
            return super().complete(messages, **kwargs)

    (generated,) = TaskGenerator(BrokenSetup()).generate("toy", 1, 0, evolved("toy"), 1)
    assert generated.failed_agent == "state_builder"
    assert "summon_order" in generated.failure_reason
