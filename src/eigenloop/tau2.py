"""tau2-bench's data layout: read its tasks.json into eigenloop Tasks and write Tasks back.

The mapping (TOOLS.md §2.5 and §3 describe tau2's side):
  user_scenario.instructions.{task_instructions, reason_for_call, known_info, unknown_info} -> UserScenario
  initial_state.initialization_data {agent_data, user_data}  -> InitialState.data_patch_json {db, user}
  initial_state.initialization_actions {env_type, func_name}  -> InitialState.actions (side from env_type)
  evaluation_criteria.actions       -> Checker.gold_actions and, one each, required_actions (compare_args:
                                       null -> ALL, [] -> NAME_ONLY, list -> LISTED), as tau2's ACTION does
  evaluation_criteria.env_assertions -> Checker.assertions
  communicate_info, nl_assertions   -> the same fields
  reward_basis DB, ACTION, COMMUNICATE, ENV_ASSERTION, NL_ASSERTION
                                    -> STATE, ACTION, COMMUNICATE, ASSERTION, NL_ASSERTION
Tasks read this way belong to the domain `<name>@tau2`, whose state is tau2's DB (see eigenloop.domains).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import task_content_hash
from eigenloop.protocol import arguments_of

SOURCE = "tau2"
BASIS = {
    "DB": pb.REWARD_COMPONENT_STATE,
    "ACTION": pb.REWARD_COMPONENT_ACTION,
    "COMMUNICATE": pb.REWARD_COMPONENT_COMMUNICATE,
    "ENV_ASSERTION": pb.REWARD_COMPONENT_ASSERTION,
    "NL_ASSERTION": pb.REWARD_COMPONENT_NL_ASSERTION,
}
SIDES = {"assistant": pb.TOOL_SIDE_AGENT, "user": pb.TOOL_SIDE_USER}
POLICY_FILES = ("policy.md", "main_policy.md")


class Tau2FormatError(ValueError):
    """A tau2 file that does not fit the layout; the message names the file, the task and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Description(_Strict):
    purpose: str | None = None
    relevant_policies: str | None = None
    notes: str | None = None


class _Instructions(_Strict):
    domain: str
    reason_for_call: str
    known_info: str | None = None
    unknown_info: str | None = None
    task_instructions: str


class _UserScenario(_Strict):
    persona: str | None = None
    instructions: _Instructions


class _EnvCall(_Strict):
    env_type: Literal["user", "assistant"]
    func_name: str
    arguments: dict[str, Any]


class _InitData(_Strict):
    agent_data: dict[str, Any] | None = None
    user_data: dict[str, Any] | None = None


class _InitialState(_Strict):
    initialization_data: _InitData | None = None
    initialization_actions: list[_EnvCall] | None = None
    message_history: list[dict[str, Any]] | None = None


class _Action(_Strict):
    action_id: str
    requestor: Literal["user", "assistant"] = "assistant"
    name: str
    arguments: dict[str, Any]
    info: str | None = None
    compare_args: list[str] | None = None


class _EnvAssertion(_Strict):
    env_type: Literal["user", "assistant"]
    func_name: str
    arguments: dict[str, Any]
    assert_value: Any = True
    message: str | None = None


class _Criteria(_Strict):
    actions: list[_Action] | None = None
    env_assertions: list[_EnvAssertion] | None = None
    communicate_info: list[str] | None = None
    nl_assertions: list[str] | None = None
    reward_basis: list[Literal["DB", "ACTION", "COMMUNICATE", "ENV_ASSERTION", "NL_ASSERTION"]]


class _Task(_Strict):
    id: str
    description: _Description | None = None
    user_scenario: _UserScenario
    ticket: str | None = None
    initial_state: _InitialState | None = None
    evaluation_criteria: _Criteria | None = None
    annotations: Any = None
    issues: Any = None


def _call(name: str, arguments: dict[str, Any], side: str, call_id: str = "") -> pb.ToolCall:
    return pb.ToolCall(id=call_id, name=name, arguments_json=json.dumps(arguments), side=SIDES[side])


def _to_task(raw: _Task, domain: str) -> pb.Task:
    scenario = raw.user_scenario.instructions
    task = pb.Task(
        id=raw.id,
        domain=f"{domain}@{SOURCE}",
        description=(raw.description.purpose or "") if raw.description else "",
        user=pb.UserScenario(
            instruction=scenario.task_instructions,
            persona=raw.user_scenario.persona or "",
            known_info=scenario.known_info or "",
            unknown_info=scenario.unknown_info or "",
            reason_for_call=scenario.reason_for_call,
        ),
        provenance=pb.Provenance(source=SOURCE),
    )
    if raw.initial_state is not None:
        data = raw.initial_state.initialization_data
        patch = {} if data is None else {k: v for k, v in (("db", data.agent_data), ("user", data.user_data)) if v}
        task.initial_state.CopyFrom(
            pb.InitialState(
                data_patch_json=json.dumps(patch) if patch else "",
                actions=[
                    _call(a.func_name, a.arguments, a.env_type) for a in raw.initial_state.initialization_actions or []
                ],
            )
        )
    criteria = raw.evaluation_criteria
    if criteria is not None:
        gold = [_call(a.name, a.arguments, a.requestor, a.action_id) for a in criteria.actions or []]
        checker = task.checker
        checker.gold_actions.extend(gold)
        for action, call in zip(criteria.actions or [], gold, strict=True):
            if action.compare_args is None:
                checker.required_actions.add(call=call, match=pb.ARGUMENT_MATCH_ALL)
            elif not action.compare_args:
                checker.required_actions.add(call=call, match=pb.ARGUMENT_MATCH_NAME_ONLY)
            else:
                checker.required_actions.add(
                    call=call, match=pb.ARGUMENT_MATCH_LISTED, compare_args=action.compare_args
                )
        checker.communicate_info.extend(criteria.communicate_info or [])
        checker.nl_assertions.extend(criteria.nl_assertions or [])
        for a in criteria.env_assertions or []:
            checker.assertions.add(
                side=SIDES[a.env_type],
                function=a.func_name,
                arguments_json=json.dumps(a.arguments),
                expected_json=json.dumps(a.assert_value),
                description=a.message or "",
            )
        checker.reward_basis.extend(BASIS[b] for b in criteria.reward_basis)
    task.provenance.content_hash = task_content_hash(task)
    return task


def _describe_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"])
    return f"field {field}: {err['msg']}"


def load_tasks(path: Path, domain: str, split: str | None = None) -> list[pb.Task]:
    """tau2 tasks from `path` (tasks.json); with `split`, only the ids listed in split_tasks.json beside it."""
    try:
        items = json.loads(path.read_text())
    except FileNotFoundError:
        raise Tau2FormatError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise Tau2FormatError(f"{path}: not JSON ({exc})") from None
    if not isinstance(items, list):
        raise Tau2FormatError(f"{path}: expected a list of tasks, got {type(items).__name__}")
    wanted = None
    if split is not None:
        splits = json.loads((path.parent / "split_tasks.json").read_text())
        if split not in splits:
            raise Tau2FormatError(f"{path.parent / 'split_tasks.json'}: no split {split!r}; has {sorted(splits)}")
        wanted = set(splits[split])
    tasks = []
    for index, item in enumerate(items):
        task_id = item.get("id", f"#{index}") if isinstance(item, dict) else f"#{index}"
        try:
            raw = _Task.model_validate(item)
        except ValidationError as exc:
            raise Tau2FormatError(f"{path}: task {task_id}: {_describe_error(exc)}") from None
        if raw.user_scenario.instructions.domain != domain:
            raise Tau2FormatError(
                f"{path}: task {task_id}: field user_scenario.instructions.domain is "
                f"{raw.user_scenario.instructions.domain!r}, expected {domain!r}"
            )
        if wanted is None or raw.id in wanted:
            tasks.append(_to_task(raw, domain))
    return tasks


def load_policy(data_dir: Path) -> str:
    for name in POLICY_FILES:
        if (data_dir / name).is_file():
            return (data_dir / name).read_text()
    raise Tau2FormatError(f"{data_dir}: no policy file ({' or '.join(POLICY_FILES)})")


def _from_call(call: pb.ToolCall) -> tuple[str, str, dict[str, Any]]:
    side = "user" if call.side == pb.TOOL_SIDE_USER else "assistant"
    return side, call.name, arguments_of(call)


def to_tau2(task: pb.Task) -> dict[str, Any]:
    """A task in tau2's tasks.json layout (the inverse of `load_tasks` for the fields tau2 has)."""
    domain = task.domain.split("@")[0]
    names = {v: k for k, v in BASIS.items()}
    out: dict[str, Any] = {
        "id": task.id,
        "description": {"purpose": task.description or None, "relevant_policies": None, "notes": None},
        "user_scenario": {
            "persona": task.user.persona or None,
            "instructions": {
                "domain": domain,
                "reason_for_call": task.user.reason_for_call or task.user.instruction,
                "known_info": task.user.known_info or None,
                "unknown_info": task.user.unknown_info or None,
                "task_instructions": task.user.instruction,
            },
        },
        "initial_state": None,
    }
    if task.HasField("initial_state"):
        patch = json.loads(task.initial_state.data_patch_json or "{}")
        out["initial_state"] = {
            "initialization_data": {"agent_data": patch.get("db"), "user_data": patch.get("user")} if patch else None,
            "initialization_actions": [
                {"env_type": side, "func_name": name, "arguments": args}
                for side, name, args in map(_from_call, task.initial_state.actions)
            ]
            or None,
            "message_history": None,
        }
    checker = task.checker
    compare: dict[str, list[str] | None] = {}
    for match in checker.required_actions:
        compare[match.call.id] = (
            None
            if match.match == pb.ARGUMENT_MATCH_ALL
            else []
            if match.match == pb.ARGUMENT_MATCH_NAME_ONLY
            else list(match.compare_args)
        )
    actions = []
    for index, call in enumerate(checker.gold_actions):
        side, name, args = _from_call(call)
        action: dict[str, Any] = {
            "action_id": call.id or f"{task.id}_{index}",
            "requestor": side,
            "name": name,
            "arguments": args,
            "info": None,
        }
        if compare.get(call.id) is not None:
            action["compare_args"] = compare[call.id]
        actions.append(action)
    out["evaluation_criteria"] = {
        "actions": actions,
        "env_assertions": [
            {
                "env_type": "user" if a.side == pb.TOOL_SIDE_USER else "assistant",
                "func_name": a.function,
                "arguments": json.loads(a.arguments_json or "{}"),
                "assert_value": json.loads(a.expected_json or "true"),
                "message": a.description or None,
            }
            for a in checker.assertions
        ]
        or None,
        "communicate_info": list(checker.communicate_info),
        "nl_assertions": list(checker.nl_assertions) or None,
        "reward_basis": [names[b] for b in checker.reward_basis if b in names],
    }
    return out


def write_tasks(tasks: list[pb.Task], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([to_tau2(t) for t in tasks], indent=2) + "\n")
    tmp.replace(path)


TERMINATIONS = {  # eigenloop's Trajectory.termination -> tau2's TerminationReason
    "agent_stop": "agent_stop",
    "user_stop": "user_stop",
    "max_turns": "max_steps",
    "too_many_errors": "too_many_errors",
    # The rollout manager's other limits: tau2 has one reason for every step or budget limit.
    "user_max_turns": "max_steps",
    "max_tokens": "max_steps",
    "turn_deadline": "max_steps",
}


def to_tau2_simulation(trajectory: pb.Trajectory, trial: int = 0) -> dict[str, Any]:
    """A trajectory in tau2's simulation layout (one entry of results.json's "simulations").

    Roles and tool calls keep tau2's conventions: a call carries its `requestor` (assistant or user) and each
    tool message answers it by `id`. Infrastructure failures and invalid simulations, which tau2 has no
    reason for, are written as "agent_error" / "user_error" so tau2's rules score them 0, as eigenloop never
    scores them at all.
    """
    termination = TERMINATIONS.get(trajectory.termination, trajectory.termination or "agent_stop")
    if trajectory.status == pb.EPISODE_STATUS_INFRA_FAILED:
        termination = "agent_error"
    elif trajectory.status == pb.EPISODE_STATUS_SIMULATOR_INVALID:
        termination = "user_error"
    messages: list[dict[str, Any]] = []
    requestors: dict[str, str] = {}
    for turn, message in enumerate(trajectory.messages):
        if message.role in (pb.ROLE_ASSISTANT, pb.ROLE_USER):
            role = "assistant" if message.role == pb.ROLE_ASSISTANT else "user"
            calls = []
            for call in message.tool_calls:
                requestors[call.id] = role
                calls.append({"id": call.id, "name": call.name, "arguments": arguments_of(call), "requestor": role})
            messages.append(
                {"role": role, "content": message.content or None, "tool_calls": calls or None, "turn_idx": turn}
            )
        elif message.role == pb.ROLE_TOOL:
            result = message.tool_result
            messages.append(
                {
                    "role": "tool",
                    "id": result.call_id,
                    "content": result.content,
                    "requestor": requestors.get(result.call_id, "assistant"),
                    "error": result.error,
                    "turn_idx": turn,
                }
            )
    reward = trajectory.reward
    names = {v: k for k, v in BASIS.items()}
    breakdown = {names[b.component]: b.value for b in reward.breakdown if b.component in names and b.checked}
    return {
        "id": f"{trajectory.task_id}-{trajectory.group_id or 'g'}-{trajectory.sample_index}",
        "task_id": trajectory.task_id,
        "trial": trial,
        "termination_reason": termination,
        "reward_info": {
            "reward": reward.value if termination in ("agent_stop", "user_stop") else 0.0,
            "reward_basis": [names[b.component] for b in reward.breakdown if b.in_basis and b.component in names],
            "reward_breakdown": breakdown,
            "info": {"failure_reason": reward.failure_reason} if reward.failure_reason else None,
        },
        "messages": messages,
    }


def write_simulations(trajectories: list[pb.Trajectory], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"simulations": [to_tau2_simulation(t) for t in trajectories]}, indent=2) + "\n")
    tmp.replace(path)
