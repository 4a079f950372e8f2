"""One episode's environment: an isolated copy of a domain's state, tool execution, and evaluation.

The toolenv service wraps exactly this class around each Session stream; running it in-process gives the
same results, which is what the overhead benchmark compares.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from eigenloop.checkers.evaluate import evaluate_checker
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import ArgumentError, Domain, DomainState, ToolError, ToolKind, to_jsonable
from eigenloop.protocol import side_from_pb

log = logging.getLogger(__name__)

MAX_ARGUMENTS_BYTES = 64 * 1024


class InitialStateError(ValueError):
    """A task's initial state cannot be built (bad patch, failing setup action)."""


@dataclass(frozen=True)
class ExecutedCall:
    call: pb.ToolCall
    result: pb.ToolResult
    kind: ToolKind | None


def execute(
    domain: Domain, state: DomainState, call: pb.ToolCall, max_arguments_bytes: int = MAX_ARGUMENTS_BYTES
) -> tuple[pb.ToolResult, ToolKind | None]:
    """Run one tool call against `state`. Every failure becomes an error result; nothing here raises."""

    def error(kind: pb.ToolErrorKind.ValueType, message: str) -> tuple[pb.ToolResult, ToolKind | None]:
        result = pb.ToolResult(
            call_id=call.id, name=call.name, content=f"Error: {message}", error=True, error_kind=kind
        )
        return result, tool.kind if tool else None

    tool = domain.tool(call.name)
    if tool is None:
        names = ", ".join(t.name for t in domain.tools)
        return error(
            pb.TOOL_ERROR_KIND_UNKNOWN_TOOL, f"unknown tool {call.name!r} in domain {domain.name}; tools: {names}"
        )
    side = side_from_pb(call.side)
    if side is not tool.side:
        return error(
            pb.TOOL_ERROR_KIND_WRONG_SIDE,
            f"{call.name} is a {tool.side.value}-side tool; the {side.value} cannot call it",
        )
    size = len(call.arguments_json.encode())
    if size > max_arguments_bytes:
        return error(
            pb.TOOL_ERROR_KIND_PAYLOAD_TOO_LARGE, f"arguments are {size} bytes; the limit is {max_arguments_bytes}"
        )
    try:
        kwargs = tool.parse_arguments(call.arguments_json)
    except ArgumentError as exc:
        if not _is_json_object(call.arguments_json or "{}"):
            return error(
                pb.TOOL_ERROR_KIND_INVALID_JSON,
                f"arguments of {call.name} must be a JSON object, got {call.arguments_json[:80]!r}",
            )
        return error(pb.TOOL_ERROR_KIND_INVALID_ARGUMENTS, str(exc))
    try:
        value = tool(state, **kwargs)
    except ToolError as exc:
        return error(pb.TOOL_ERROR_KIND_TOOL_FAILED, str(exc))
    except Exception as exc:  # a bug in a tool must not take the session down
        log.exception("tool raised", extra={"tool": call.name, "domain": domain.name})
        return error(pb.TOOL_ERROR_KIND_TOOL_FAILED, f"internal error in {call.name}: {type(exc).__name__}: {exc}")
    if domain.sync is not None:
        domain.sync(state)
    content = value if isinstance(value, str) else json.dumps(to_jsonable(value), default=str)
    return pb.ToolResult(
        call_id=call.id, name=call.name, content=content, error_kind=pb.TOOL_ERROR_KIND_NONE
    ), tool.kind


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the interpreter's stack ("[[[[...")
        return False


@lru_cache(maxsize=64)
def _base_state(domain: Domain, seed: int) -> DomainState:
    # A copy-on-write view made once, so every session of this domain and seed shares its tables and
    # their entry hashes (computed on first need).
    return domain.initial_state(seed).copy()


def build_initial_state(domain: Domain, initial: pb.InitialState, seed: int = 0) -> DomainState:
    """The domain's seeded state, with the task's patch applied and its setup actions run, as a private copy."""
    state = _base_state(domain, seed).copy()
    if initial.data_patch_json:
        try:
            patch = json.loads(initial.data_patch_json)
        except (ValueError, RecursionError) as exc:
            raise InitialStateError(f"initial state patch is not JSON: {exc}") from None
        if not isinstance(patch, dict):
            raise InitialStateError("initial state patch must be a JSON object with 'db' and/or 'user'")
        try:
            state = state.patched(patch)
        except ValueError as exc:
            raise InitialStateError(f"initial state patch does not fit domain {domain.name}: {exc}") from None
    for action in initial.actions:
        setup = domain.setup_functions.get(action.name)
        if setup is not None:
            try:
                setup(state, **json.loads(action.arguments_json or "{}"))
            except Exception as exc:
                raise InitialStateError(
                    f"setup function {action.name}({action.arguments_json}) failed: {exc}"
                ) from None
            continue
        result, _ = execute(domain, state, action)
        if result.error:
            raise InitialStateError(f"setup action {action.name} failed: {result.content}")
    if domain.sync is not None:
        domain.sync(state)
    return state


@lru_cache(maxsize=1024)
def _initial_hash(domain: Domain, initial: bytes, seed: int) -> str:
    return build_initial_state(domain, pb.InitialState.FromString(initial), seed).hash()


class EnvSession:
    """An isolated environment for one episode; `call` and `evaluate` are what the Session stream carries."""

    def __init__(
        self,
        domain: Domain,
        *,
        task: pb.Task | None = None,
        initial_state: pb.InitialState | None = None,
        seed: int = 0,
        max_arguments_bytes: int = MAX_ARGUMENTS_BYTES,
    ) -> None:
        self.domain = domain
        self.task = task
        self.seed = seed
        self.max_arguments_bytes = max_arguments_bytes
        if task is not None and task.HasField("initial_state"):
            self.initial = task.initial_state
        else:
            self.initial = initial_state or pb.InitialState()
        self.state = build_initial_state(domain, self.initial, seed)
        self.session_id = uuid.uuid4().hex[:12]
        self.log: list[ExecutedCall] = []

    def call(self, call: pb.ToolCall) -> pb.ToolResult:
        if not call.id:
            call = pb.ToolCall(
                id=f"call_{len(self.log)}", name=call.name, arguments_json=call.arguments_json, side=call.side
            )
        result, kind = execute(self.domain, self.state, call, self.max_arguments_bytes)
        self.log.append(ExecutedCall(call, result, kind))
        return result

    def evaluate(self, messages: Sequence[pb.Message] = (), checker: pb.Checker | None = None) -> pb.Reward:
        if checker is None:
            if self.task is None or not self.task.HasField("checker"):
                raise ValueError("no checker: open the session with a task or pass a checker to evaluate")
            checker = self.task.checker
        return evaluate_checker(
            self.domain,
            checker,
            initial=self.initial,
            seed=self.seed,
            final_state=self.state,
            calls=[e.call for e in self.log],
            messages=messages,
        )

    def state_json(self) -> str:
        return json.dumps(self.state.to_dict(), sort_keys=True)

    def state_hash(self) -> str:
        if not self.log:  # untouched: the hash of this task's start, computed once per task
            return _initial_hash(self.domain, self.initial.SerializeToString(deterministic=True), self.seed)
        return self.state.hash()
