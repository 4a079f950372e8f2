"""Prompt sets and small generators shared by the synthesis tests."""

from __future__ import annotations

from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.llm.procedural import ProceduralBackend
from eigenloop.synthesis import prompts as P
from eigenloop.synthesis.agents import RetryPolicy
from eigenloop.synthesis.generator import TaskGenerator

EVOLVED: dict[str, Any] = {
    P.PLANNER: P.PlannerSettings(distinct_entities=True, worlds=2),
    P.DIALOGUE_WRITER: P.DialogueWriterSettings(
        confirm_before_write=True, lookup_before_acting=True, ids_in_instruction=True
    ),
    P.CHECKER_WRITER: P.CheckerWriterSettings(
        reward_basis=["state", "action", "communicate", "assertion"], forbid_unrequested_writes=True
    ),
}


def prompt_set(domain: str, **settings: Any) -> pb.PromptSet:
    """The default prompt set with some agents' settings replaced (agent name -> settings model)."""
    result = P.default_prompt_set(domain)
    for agent in result.agents:
        if agent.agent in settings:
            agent.settings.clear()
            agent.settings.update(P.settings_json(settings[agent.agent]))
    result.version = P.content_version(result)
    return result


def evolved(domain: str) -> pb.PromptSet:
    return prompt_set(domain, **EVOLVED)


def generator() -> TaskGenerator:
    return TaskGenerator(ProceduralBackend(), retry=RetryPolicy(attempts=2, backoff_s=0.0))


def tasks(domain: str, count: int, settings: pb.PromptSet, seed: int = 0) -> list[pb.Task]:
    return [g.task for g in generator().generate(domain, count, seed, settings, 1) if g.HasField("task")]
