"""The generator: scenario planner → state builder → dialogue writer → checker writer, one task at a time.

Each agent is asked through its backend with its own prompt and settings from the PromptSet. The generator
itself never trusts what an agent wrote: it builds the initial state in a session, executes every tool call
of the dialogue in it (replacing the written tool results with the real ones), and sets the checker's gold
actions from what actually ran. A task that fails anywhere comes back as a GeneratedTask with the failing
agent and the reason, and generation goes on.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import json_format

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import generator_pb2 as gpb
from eigenloop.data import task_content_hash, to_record
from eigenloop.domains import load_domain
from eigenloop.env.session import InitialStateError
from eigenloop.llm.base import ChatBackend
from eigenloop.rpc.stream import StreamClosedError
from eigenloop.synthesis import prompts as P
from eigenloop.synthesis.agents import AgentFailure, RetryPolicy, ask
from eigenloop.synthesis.grounding import GroundingSession, Sessions, local_sessions


def task_id(domain: str, round_: int, seed: int, index: int, goal: str) -> str:
    """Unique per run and readable: the goal comes last (reports group by it)."""
    return f"{domain}-r{round_}-s{seed}-{index:04d}-{goal}"


class TaskGenerator:
    def __init__(
        self, backend: ChatBackend, sessions: Sessions = local_sessions, retry: RetryPolicy | None = None
    ) -> None:
        self.backend = backend
        self.sessions = sessions
        self.retry = retry or RetryPolicy()

    def generate(
        self, domain: str, count: int, seed: int, prompt_set: pb.PromptSet, round_: int, start: int = 0
    ) -> Iterator[gpb.GeneratedTask]:
        """Candidates `start`..`start+count-1` of a round. Raises UnknownDomainError / PromptSetError up front."""
        load_domain(domain)
        P.check_prompt_set(prompt_set)
        used: list[str] = []
        for index in range(start, start + count):
            yield self._one(domain, seed, prompt_set, round_, index, used)

    def _one(
        self, domain: str, seed: int, prompt_set: pb.PromptSet, round_: int, index: int, used: list[str]
    ) -> gpb.GeneratedTask:
        started = time.perf_counter()
        calls_before = self.backend.usage.calls
        task_seed = int.from_bytes(random.Random(f"task:{seed}:{round_}:{index}").randbytes(4), "big")
        try:
            task = self._write(domain, seed, prompt_set, round_, index, task_seed, used)
            generated = gpb.GeneratedTask(task=task)
        except AgentFailure as failure:
            generated = gpb.GeneratedTask(failure_reason=failure.reason, failed_agent=failure.agent)
        generated.cost.llm_calls = self.backend.usage.calls - calls_before
        generated.cost.seconds = time.perf_counter() - started
        return generated

    def _ask(self, prompt_set: pb.PromptSet, agent: str, domain: str, seed: int, given: dict[str, Any]) -> Any:
        prompt = P.agent_prompt(prompt_set, agent)
        settings = P.parse_settings(prompt).model_dump(mode="json")
        brief = {"domain": domain, "seed": seed, "settings": settings, "input": given}
        return ask(self.backend, agent, prompt.prompt, brief, self.retry)

    def _write(
        self, domain: str, seed: int, prompt_set: pb.PromptSet, round_: int, index: int, task_seed: int, used: list[str]
    ) -> pb.Task:
        planned = self._ask(
            prompt_set, P.PLANNER, domain, task_seed, {"run_seed": seed, "round": round_, "avoid": used}
        )
        scenario, world = (
            _field(planned, P.PLANNER, "scenario", dict),
            int(_field(planned, P.PLANNER, "world_seed", int)),
        )
        used.append(str(planned.get("key", "")))

        built = self._ask(prompt_set, P.STATE_BUILDER, domain, task_seed, {"scenario": scenario, "world_seed": world})
        initial = _initial_state(built)
        session = self._open(domain, initial, world)
        try:
            written = self._ask(
                prompt_set,
                P.DIALOGUE_WRITER,
                domain,
                task_seed,
                {"scenario": scenario, "world_seed": world, "initial_state": to_record(initial)},
            )
            dialogue, gold = _ground(session, _messages(written))
        finally:
            session.close()

        checker_answer = self._ask(
            prompt_set,
            P.CHECKER_WRITER,
            domain,
            task_seed,
            {
                "allowed": bool(scenario.get("allowed", True)),
                "gold_calls": [to_record(c) for c in gold],
                "communicate": written.get("communicate", []),
                "assertions": written.get("assertions", []),
            },
        )
        checker = _parse(_field(checker_answer, P.CHECKER_WRITER, "checker", dict), pb.Checker(), P.CHECKER_WRITER)
        checker.ClearField("gold_actions")
        checker.gold_actions.extend(
            pb.ToolCall(name=c.name, arguments_json=c.arguments_json, side=c.side) for c in gold
        )
        task = pb.Task(
            id=task_id(domain, round_, seed, index, str(scenario.get("goal", ""))),
            domain=domain,
            description=str(written.get("description", "")),
            user=_parse(_field(written, P.DIALOGUE_WRITER, "user", dict), pb.UserScenario(), P.DIALOGUE_WRITER),
            initial_state=initial,
            reference_dialogue=dialogue,
            checker=checker,
        )
        task.provenance.CopyFrom(
            pb.Provenance(
                source="generator",
                round=round_,
                prompt_set_version=prompt_set.version,
                # The world the task runs in: open its sessions with this seed.
                seed=world,
                backend=self.backend.name,
                content_hash=task_content_hash(task),
            )
        )
        return task

    def _open(self, domain: str, initial: pb.InitialState, world: int) -> GroundingSession:
        try:
            return self.sessions(domain, initial, world)
        except (InitialStateError, StreamClosedError, grpc.RpcError) as exc:
            detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
            raise AgentFailure(P.STATE_BUILDER, f"the initial state does not build: {detail}") from None


def _field(answer: dict[str, Any], agent: str, key: str, kind: type) -> Any:
    value = answer.get(key)
    if not isinstance(value, kind):
        raise AgentFailure(agent, f"the answer has no {kind.__name__} '{key}'")
    return value


def _parse(record: dict[str, Any], message: Any, agent: str) -> Any:
    try:
        return json_format.ParseDict(record, message)
    except json_format.ParseError as exc:
        raise AgentFailure(agent, f"not a {type(message).__name__}: {exc}") from None


def _initial_state(built: dict[str, Any]) -> pb.InitialState:
    patch = built.get("data_patch") or {}
    actions = built.get("actions") or []
    if not isinstance(patch, dict) or not isinstance(actions, list):
        raise AgentFailure(P.STATE_BUILDER, "data_patch must be an object and actions a list")
    initial = pb.InitialState(data_patch_json=json.dumps(patch, sort_keys=True) if patch else "")
    for action in actions:
        if not isinstance(action, dict) or not isinstance(action.get("name"), str):
            raise AgentFailure(P.STATE_BUILDER, f"a setup action needs a name: {action!r}")
        side = pb.TOOL_SIDE_USER if action.get("side") == "user" else pb.TOOL_SIDE_AGENT
        initial.actions.add(name=action["name"], arguments_json=json.dumps(action.get("arguments", {})), side=side)
    return initial


def _messages(written: dict[str, Any]) -> list[pb.Message]:
    records = _field(written, P.DIALOGUE_WRITER, "dialogue", list)
    messages = [_parse(r, pb.Message(), P.DIALOGUE_WRITER) for r in records if isinstance(r, dict)]
    if len(messages) != len(records) or not messages:
        raise AgentFailure(P.DIALOGUE_WRITER, "the dialogue must be a non-empty list of messages")
    return messages


def _ground(session: GroundingSession, written: list[pb.Message]) -> tuple[list[pb.Message], list[pb.ToolCall]]:
    """The dialogue with every call executed in `session`: written tool results are replaced by real ones."""
    dialogue: list[pb.Message] = []
    gold: list[pb.ToolCall] = []
    for message in written:
        if message.role == pb.ROLE_TOOL:
            continue
        turn = pb.Message(role=message.role, content=message.content)
        results = []
        for call in message.tool_calls:
            side = call.side or (pb.TOOL_SIDE_USER if message.role == pb.ROLE_USER else pb.TOOL_SIDE_AGENT)
            executed = pb.ToolCall(
                id=f"call_{len(gold)}", name=call.name, arguments_json=call.arguments_json, side=side
            )
            result = session.call(executed)
            if result.error:
                raise AgentFailure(
                    P.DIALOGUE_WRITER, f"gold call {call.name}({call.arguments_json}) failed: {result.content}"
                )
            turn.tool_calls.append(executed)
            results.append(pb.Message(role=pb.ROLE_TOOL, content=result.content, tool_result=result))
            gold.append(executed)
        dialogue += [turn, *results]
    if not any(m.role == pb.ROLE_ASSISTANT and m.content for m in dialogue):
        raise AgentFailure(P.DIALOGUE_WRITER, "the agent never says anything")
    return dialogue, gold
