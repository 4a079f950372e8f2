"""PromptSets: one prompt plus workflow settings per generator agent, versioned by content.

A PromptSet is what evolution changes between rounds. Its settings are JSON values (the contract stores
them as strings); each agent's are validated here by a pydantic model, so an evolved or hand-written
PromptSet with a typo is refused with the key named instead of being silently ignored.

The defaults are deliberately what a first, naive prompt asks for: plan a goal, write the dialogue, derive
the checker from the final state. What they leave out (distinct entities, several worlds, confirmations,
lookups, identifiers in the user's instruction, a checker beyond the state) is what the validators catch
and evolution adds; see services/generator/README.md.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eigenloop.contracts.v1 import common_pb2 as pb

PLANNER = "scenario_planner"
STATE_BUILDER = "state_builder"
DIALOGUE_WRITER = "dialogue_writer"
CHECKER_WRITER = "checker_writer"
AGENTS = (PLANNER, STATE_BUILDER, DIALOGUE_WRITER, CHECKER_WRITER)

BasisName = Literal["state", "action", "communicate", "assertion"]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlannerSettings(_Settings):
    # Relative weight per goal; goals not listed weigh 1.
    goal_weights: dict[str, float] = Field(default_factory=dict)
    # How many seeded worlds (databases) a round spreads its scenarios over; 1 = the run's seed, every round.
    worlds: Annotated[int, Field(ge=1, le=64)] = 1
    # Redraw a scenario whose (goal, entities) this request already used.
    distinct_entities: bool = False
    max_redraws: Annotated[int, Field(ge=0, le=100)] = 8


class StateBuilderSettings(_Settings):
    # Run the scenario's setup actions (dual-control breakage, account changes) when building the initial state.
    apply_setup_actions: bool = True


class DialogueWriterSettings(_Settings):
    # Have the user explicitly confirm before every write (the airline and retail policies require it).
    confirm_before_write: bool = False
    # Look the entities up before acting or stating facts about them.
    lookup_before_acting: bool = False
    # Put the identifiers the user gives into the user's instruction (known_info), not only into the dialogue.
    ids_in_instruction: bool = False


class CheckerWriterSettings(_Settings):
    reward_basis: list[BasisName] = Field(default_factory=lambda: list[BasisName](["state"]), min_length=1)
    # Forbid every agent write the gold dialogue does not make (what a refusal must not do).
    forbid_unrequested_writes: bool = False


SETTINGS_MODELS: dict[str, type[_Settings]] = {
    PLANNER: PlannerSettings,
    STATE_BUILDER: StateBuilderSettings,
    DIALOGUE_WRITER: DialogueWriterSettings,
    CHECKER_WRITER: CheckerWriterSettings,
}

DEFAULT_PROMPTS = {
    PLANNER: "You plan one customer-service scenario in the given domain: pick a goal and the concrete entities "
    "of the database it touches. Answer with JSON.",
    STATE_BUILDER: "You prepare the initial environment state the scenario needs (a JSON merge patch and setup "
    "actions). Answer with JSON.",
    DIALOGUE_WRITER: "You write the user's instruction and a reference dialogue between the user and the agent, "
    "with the agent's tool calls, that fulfils the scenario. Answer with JSON.",
    CHECKER_WRITER: "You write an executable checker for the dialogue from the final state it leads to. Answer "
    "with JSON.",
}


class PromptSetError(ValueError):
    """A PromptSet that cannot drive the generator; the message says what is wrong."""


def settings_json(values: BaseModel) -> dict[str, str]:
    """A settings model as the contract's map of JSON values."""
    return {key: json.dumps(value, sort_keys=True) for key, value in values.model_dump(mode="json").items()}


def parse_settings(agent: pb.AgentPrompt) -> _Settings:
    model = SETTINGS_MODELS.get(agent.agent)
    if model is None:
        raise PromptSetError(f"unknown generator agent {agent.agent!r}; the agents are {', '.join(AGENTS)}")
    raw: dict[str, object] = {}
    for key, text in agent.settings.items():
        try:
            raw[key] = json.loads(text)
        except json.JSONDecodeError:
            raise PromptSetError(f"{agent.agent}.settings[{key!r}] is not a JSON value: {text[:80]!r}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PromptSetError(f"{agent.agent}.settings: {problems}") from None


def agent_prompt(prompt_set: pb.PromptSet, agent: str) -> pb.AgentPrompt:
    for candidate in prompt_set.agents:
        if candidate.agent == agent:
            return candidate
    raise PromptSetError(f"prompt set {prompt_set.version or '(unversioned)'} has no {agent}")


def check_prompt_set(prompt_set: pb.PromptSet) -> None:
    """Raise PromptSetError unless every agent is present once, with a prompt and valid settings."""
    if not prompt_set.agents:
        raise PromptSetError("the prompt set is empty: it needs one prompt for each of " + ", ".join(AGENTS))
    names = [a.agent for a in prompt_set.agents]
    for agent in prompt_set.agents:
        parse_settings(agent)
        if not agent.prompt.strip():
            raise PromptSetError(f"{agent.agent} has an empty prompt")
    missing = [a for a in AGENTS if a not in names]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if missing or duplicated:
        raise PromptSetError(f"prompt set agents: missing {missing}, duplicated {duplicated}")


def content_version(prompt_set: pb.PromptSet) -> str:
    """`v<round>-<hash>`: the same prompts and settings always get the same version."""
    digest = hashlib.sha256()
    for agent in sorted(prompt_set.agents, key=lambda a: a.agent):
        digest.update(json.dumps([agent.agent, agent.prompt, sorted(agent.settings.items())]).encode())
    return f"v{prompt_set.round}-{digest.hexdigest()[:8]}"


def default_prompt_set(domain: str) -> pb.PromptSet:
    prompt_set = pb.PromptSet(
        domain=domain,
        round=0,
        rationale="initial prompts",
        agents=[
            pb.AgentPrompt(agent=name, prompt=DEFAULT_PROMPTS[name], settings=settings_json(SETTINGS_MODELS[name]()))
            for name in AGENTS
        ],
    )
    prompt_set.version = content_version(prompt_set)
    return prompt_set
