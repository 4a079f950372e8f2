"""What the procedural backend answers, agent by agent. Deterministic: the brief carries the seed.

Each generator agent sends a brief (its settings and its input, see eigenloop.synthesis.agents); an LLM
would read the prompt and answer JSON, these functions compute the same JSON from the domain:

- scenario_planner draws a goal (weighted by `goal_weights`) and runs the domain's scenario sampler for it on
  one of `worlds` seeded databases; with `distinct_entities` it redraws scenarios the request already used.
- state_builder returns the scenario's setup actions (dual-control breakage) as the initial state.
- dialogue_writer starts from the domain's reference procedure for the goal (eigenloop.synthesis.reference)
  and writes only what its directives ask for: without `lookup_before_acting` the agent acts on what it is
  told and skips the lookups; without `confirm_before_write` the user's explicit "yes" before a write is not
  written; without `ids_in_instruction` the user's instruction lacks the identifiers (known_info) the user
  then states.
- checker_writer derives the checker from the grounded dialogue: the components named in `reward_basis`,
  and with `forbid_unrequested_writes` every agent write the dialogue does not make is forbidden.
- prompt_rewriter (evolution) proposes directive edits for the failure categories it is shown.

Nothing here draws a failure at random: a missing directive produces the same defect every time it matters,
which is what lets the validators find it and evolution fix it.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import to_record
from eigenloop.domains import load_domain
from eigenloop.domains.base import Domain, DomainState, Scenario, Side, ToolKind
from eigenloop.env.session import _base_state
from eigenloop.protocol import side_from_pb
from eigenloop.synthesis import prompts as P
from eigenloop.synthesis.reference import NoReferenceError, reference_task


class BriefError(ValueError):
    """The brief asks for something the procedural backend cannot do; the message says what."""


def answer(brief: dict[str, Any]) -> dict[str, Any]:
    agent = brief.get("agent")
    handler = HANDLERS.get(str(agent))
    if handler is None:
        raise BriefError(f"the procedural backend does not play agent {agent!r}; it plays {', '.join(HANDLERS)}")
    return handler(brief)


def _domain(brief: dict[str, Any]) -> Domain:
    return load_domain(str(brief["domain"]))


def _rng(brief: dict[str, Any], purpose: str) -> random.Random:
    return random.Random(f"{brief['seed']}:{purpose}")


def world_seed(run_seed: int, round_: int, index: int, worlds: int) -> int:
    """The database seed of world `index`; a single world is the run's own seed, the same every round."""
    if worlds == 1:
        return run_seed
    return int.from_bytes(random.Random(f"world:{run_seed}:{round_}:{index}").randbytes(4), "big") % 1_000_000


def entity_key(scenario: Scenario, world: int) -> str:
    return f"{world}:{scenario.goal}:{json.dumps(scenario.entities, sort_keys=True)}"


# ---------------------------------------------------------------------------------------------- planner


def plan_scenario(brief: dict[str, Any]) -> dict[str, Any]:
    domain = _domain(brief)
    settings = P.PlannerSettings.model_validate(brief["settings"])
    if not domain.samplers:
        raise BriefError(f"domain {domain.name} has no scenario samplers to plan from")
    rng = _rng(brief, "plan")
    goals = sorted(domain.samplers)
    weights = [max(settings.goal_weights.get(g, 1.0), 0.0) for g in goals]
    if not any(weights):
        raise BriefError("every goal has weight 0")
    avoid = set(brief["input"].get("avoid", ()))
    run_seed, round_ = int(brief["input"]["run_seed"]), int(brief["input"]["round"])
    fallback: dict[str, Any] | None = None
    for _ in range(settings.max_redraws + 1 if settings.distinct_entities else 1):
        world = world_seed(run_seed, round_, rng.randrange(settings.worlds), settings.worlds)
        goal = rng.choices(goals, weights)[0]
        scenario = domain.samplers[goal](_base_state(domain, world), rng)
        if scenario is None:
            continue
        found = {"scenario": dataclasses.asdict(scenario), "world_seed": world, "key": entity_key(scenario, world)}
        if found["key"] not in avoid:
            return found
        fallback = fallback or found
    if fallback is not None:
        return fallback
    raise BriefError(f"no scenario found (the sampler found no candidate for the goals drawn in {domain.name})")


# ---------------------------------------------------------------------------------------------- state builder


def build_state(brief: dict[str, Any]) -> dict[str, Any]:
    settings = P.StateBuilderSettings.model_validate(brief["settings"])
    entities = brief["input"]["scenario"]["entities"]
    actions = json.loads(entities.get("setup_actions", "[]")) if settings.apply_setup_actions else []
    return {"data_patch": {}, "actions": actions}


# ---------------------------------------------------------------------------------------------- dialogue writer


def write_dialogue(brief: dict[str, Any]) -> dict[str, Any]:
    domain = _domain(brief)
    settings = P.DialogueWriterSettings.model_validate(brief["settings"])
    scenario = Scenario(**brief["input"]["scenario"])
    world = int(brief["input"]["world_seed"])
    state: DomainState = _base_state(domain, world)
    try:
        reference = reference_task(domain.name, scenario, state, world, _rng(brief, "dialogue"))
    except NoReferenceError as exc:
        raise BriefError(str(exc)) from None
    messages = list(reference.reference_dialogue)
    if not settings.lookup_before_acting:
        messages = _without_lookups(domain, messages)
    if not settings.confirm_before_write:
        messages = _without_confirmations(domain, messages)
    user = pb.UserScenario()
    user.CopyFrom(reference.user)
    if not settings.ids_in_instruction:
        user.known_info = ""
    checker = reference.checker
    return {
        "description": reference.description,
        "user": to_record(user),
        "dialogue": [to_record(m) for m in messages],
        "communicate": list(checker.communicate_info),
        "assertions": [to_record(a) for a in checker.assertions],
    }


def _kind(domain: Domain, call: pb.ToolCall) -> ToolKind | None:
    tool = domain.tool(call.name)
    return tool.kind if tool is not None else None


def _is_agent_write(domain: Domain, message: pb.Message) -> bool:
    return message.role == pb.ROLE_ASSISTANT and any(
        _kind(domain, c) is ToolKind.WRITE and side_from_pb(c.side) is Side.AGENT for c in message.tool_calls
    )


def _without_lookups(domain: Domain, messages: list[pb.Message]) -> list[pb.Message]:
    """Drop the agent's read calls and their results: the agent acts on what it was told."""
    dropped: set[str] = set()
    kept: list[pb.Message] = []
    for message in messages:
        if (
            message.role == pb.ROLE_ASSISTANT
            and message.tool_calls
            and all(
                _kind(domain, c) is ToolKind.READ and side_from_pb(c.side) is Side.AGENT for c in message.tool_calls
            )
        ):
            dropped |= {c.id for c in message.tool_calls}
            continue
        if message.role == pb.ROLE_TOOL and message.tool_result.call_id in dropped:
            continue
        kept.append(message)
    return kept


def _without_confirmations(domain: Domain, messages: list[pb.Message]) -> list[pb.Message]:
    """Drop the user's reply that comes right before an agent write: the agent writes straight after proposing."""
    skip = {
        i - 1
        for i, message in enumerate(messages)
        if i > 0 and _is_agent_write(domain, message) and messages[i - 1].role == pb.ROLE_USER
    }
    return [m for i, m in enumerate(messages) if i not in skip]


# ---------------------------------------------------------------------------------------------- checker writer


def write_checker(brief: dict[str, Any]) -> dict[str, Any]:
    domain = _domain(brief)
    settings = P.CheckerWriterSettings.model_validate(brief["settings"])
    given = brief["input"]
    calls = [_call(c) for c in given["gold_calls"]]
    agent_calls = [c for c in calls if side_from_pb(c.side) is Side.AGENT]
    checker = pb.Checker()
    basis = set(settings.reward_basis)
    if "state" in basis:
        checker.reward_basis.append(pb.REWARD_COMPONENT_STATE)
    if "action" in basis:
        written = set()
        for call in agent_calls:
            tool = domain.tool(call.name)
            if tool is not None and tool.kind is ToolKind.WRITE:
                keys = sorted(json.loads(call.arguments_json or "{}"))
                checker.required_actions.add(call=call, match=pb.ARGUMENT_MATCH_LISTED, compare_args=keys)
                written.add(call.name)
            elif call.name.startswith("transfer"):
                checker.required_actions.add(call=call, match=pb.ARGUMENT_MATCH_NAME_ONLY)
        if not written:
            # Nothing changes (a refusal, a question): the decisive actions are the lookups the answer rests on;
            # without them a reply that happens to name the right status would pass.
            for call in agent_calls:
                tool = domain.tool(call.name)
                if tool is not None and tool.kind is ToolKind.READ:
                    checker.required_actions.add(call=call, match=pb.ARGUMENT_MATCH_ALL)
        if settings.forbid_unrequested_writes:
            for tool in domain.agent_tools:
                if tool.kind is ToolKind.WRITE and tool.name not in written:
                    checker.forbidden_actions.add(call=pb.ToolCall(name=tool.name), match=pb.ARGUMENT_MATCH_NAME_ONLY)
        checker.reward_basis.append(pb.REWARD_COMPONENT_ACTION)
    if "communicate" in basis and given.get("communicate"):
        checker.communicate_info.extend(given["communicate"])
        checker.reward_basis.append(pb.REWARD_COMPONENT_COMMUNICATE)
    if "assertion" in basis and given.get("assertions"):
        for record in given["assertions"]:
            checker.assertions.add().CopyFrom(_parse(record, pb.StateAssertion()))
        checker.reward_basis.append(pb.REWARD_COMPONENT_ASSERTION)
    record = to_record(checker)
    record.pop("gold_actions", None)  # the generator sets them from the grounded dialogue itself
    return {"checker": record}


def _call(record: dict[str, Any]) -> pb.ToolCall:
    call: pb.ToolCall = _parse(record, pb.ToolCall())
    return call


def _parse(record: dict[str, Any], message: Any) -> Any:
    from google.protobuf import json_format

    return json_format.ParseDict(record, message)


# ---------------------------------------------------------------------------------------------- evolution

# Which directive edit addresses which failure category, per agent: the procedural stand-in for an LLM
# rewriting a prompt from failure examples. Each edit is (settings patch, the sentence it adds to the prompt).
EDITS: dict[str, dict[str, list[tuple[dict[str, Any], str]]]] = {
    P.PLANNER: {
        "near_duplicate": [
            ({"distinct_entities": True}, "Never reuse the goal and entities of an earlier scenario."),
            ({"worlds": 4}, "Spread scenarios over several freshly seeded databases."),
        ],
        "generation_failed": [({"max_redraws": 16}, "When a goal has no candidate, draw another.")],
    },
    P.DIALOGUE_WRITER: {
        "policy_violation": [
            ({"confirm_before_write": True}, 'Before every write, list the action and wait for the user\'s "yes".')
        ],
        "inconsistent": [
            ({"lookup_before_acting": True}, "Look every entity up with the tools before acting or stating facts."),
            ({"ids_in_instruction": True}, "Put every identifier the user gives into the user's known information."),
        ],
        "not_executable": [({"lookup_before_acting": True}, "Ground every call in looked-up data.")],
    },
    P.CHECKER_WRITER: {
        "checker_passes_empty": [
            ({"reward_basis": ["state", "action"]}, "Require the decisive actions, not only the final state."),
            # A task that changes nothing (a refusal, a question) is told apart from doing nothing only by what
            # the agent must say.
            ({"reward_basis": ["state", "communicate"]}, "Require the facts the agent must tell the user."),
        ],
        "weak_checker": [
            ({"forbid_unrequested_writes": True}, "Forbid every write the dialogue does not make."),
            ({"reward_basis": ["state", "assertion"]}, "Assert the facts of the final state."),
        ],
    },
}


def rewrite_prompt(brief: dict[str, Any]) -> dict[str, Any]:
    """Candidate rewrites of one agent's prompt: each edit addressing a reported category, then all of them."""
    agent = str(brief["input"]["agent"])
    settings: dict[str, Any] = dict(brief["settings"])
    prompt = str(brief["input"]["prompt"])
    edits = EDITS.get(agent, {})
    applicable: list[tuple[dict[str, Any], str]] = []
    for failure in brief["input"]["failures"]:
        for patch, sentence in edits.get(failure["category"], []):
            merged = _merge(settings, patch)
            if merged != settings and (patch, sentence) not in applicable:
                applicable.append((patch, sentence))
    candidates = [
        {"settings": _merge(settings, patch), "prompt": f"{prompt} {sentence}", "rationale": sentence}
        for patch, sentence in applicable
    ]
    if len(applicable) > 1:
        combined, sentences = dict(settings), []
        for patch, sentence in applicable:
            combined = _merge(combined, patch)
            sentences.append(sentence)
        candidates.append({"settings": combined, "prompt": " ".join([prompt, *sentences]), "rationale": "all edits"})
    return {"candidates": candidates}


def _merge(settings: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(settings)
    for key, value in patch.items():
        current = merged.get(key)
        if isinstance(value, list) and isinstance(current, list):
            value = current + [v for v in value if v not in current]  # a basis only grows
        elif isinstance(value, int) and isinstance(current, int) and not isinstance(value, bool):
            value = max(value, current)
        merged[key] = value
    return merged


HANDLERS = {
    P.PLANNER: plan_scenario,
    P.STATE_BUILDER: build_state,
    P.DIALOGUE_WRITER: write_dialogue,
    P.CHECKER_WRITER: write_checker,
    "prompt_rewriter": rewrite_prompt,
}
