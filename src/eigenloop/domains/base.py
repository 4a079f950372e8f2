"""What a domain is: a state model (agent DB + user state), typed tool functions, assertions and a policy.

Tools are plain functions whose first parameter is the part of the state they act on (the agent DB for
agent tools, the user's own state for user tools; a first parameter annotated `DomainState` receives the
whole state, for dual-control tools that read both sides) and whose other parameters are typed. Their JSON
Schemas and argument validation come from those signatures, so a tool is written once:

    @tool(kind=ToolKind.WRITE)
    def cancel_order(db: ShopDB, order_id: str, reason: Literal["mistake", "no_longer_needed"]) -> Order:
        '''Cancel a pending order.'''
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from eigenloop.domains.cow import CowDict, CowList, cow_view, table_digest


class ToolKind(StrEnum):
    READ = "read"
    WRITE = "write"
    THINK = "think"
    GENERIC = "generic"


class Side(StrEnum):
    AGENT = "agent"
    USER = "user"


class ToolError(Exception):
    """Raised by a tool to refuse a call (unknown id, wrong status): returned to the caller as an error result."""


class ArgumentError(ValueError):
    """The arguments do not fit the tool's signature; the message lists every problem."""


class _Arguments(BaseModel):
    # Strict: "5" is not an int and unknown keys are errors, so a wrong call is reported, not guessed at.
    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True)
class Tool:
    name: str
    fn: Callable[..., Any]
    side: Side
    kind: ToolKind
    description: str
    arguments: type[BaseModel]

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        return schema

    def parse_arguments(self, arguments_json: str) -> dict[str, Any]:
        """Validated keyword arguments from JSON text; raises ArgumentError with every problem listed."""
        try:
            parsed = self.arguments.model_validate_json(arguments_json or "{}")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}" for err in exc.errors()
            )
            raise ArgumentError(f"invalid arguments for {self.name}: {problems}") from None
        # Keep nested models as models: tools receive exactly the types their signature names.
        return {name: getattr(parsed, name) for name in type(parsed).model_fields}

    whole_state: bool = False

    def __call__(self, state: DomainState, /, **kwargs: Any) -> Any:
        if self.whole_state:
            return self.fn(state, **kwargs)
        target = state.db if self.side is Side.AGENT else state.user
        if target is None:
            raise ToolError(f"{self.name} needs the user's state, which this domain does not have")
        return self.fn(target, **kwargs)


_TOOL_MARK = "__eigenloop_tool__"


def tool(kind: ToolKind = ToolKind.READ, side: Side = Side.AGENT) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a function as a tool; `Domain` collects the marked functions of its tool modules."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _TOOL_MARK, (kind, side))
        return fn

    return mark


def make_tool(fn: Callable[..., Any]) -> Tool:
    kind, side = getattr(fn, _TOOL_MARK)
    hints = get_type_hints(fn, include_extras=True)
    all_params = list(inspect.signature(fn).parameters.values())
    if not all_params:
        raise TypeError(f"tool {fn.__name__}: the first parameter must be the state it acts on")
    params = all_params[1:]
    fields: dict[str, Any] = {}
    for param in params:
        if param.name not in hints:
            raise TypeError(f"tool {fn.__name__}: parameter {param.name} needs a type annotation")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], default)
    model = create_model(f"{fn.__name__}_arguments", __base__=_Arguments, **fields)
    return Tool(
        name=fn.__name__,
        fn=fn,
        side=side,
        kind=kind,
        description=inspect.cleandoc(fn.__doc__ or "").strip(),
        arguments=model,
        whole_state=hints.get(all_params[0].name) is DomainState,
    )


def collect_tools(functions: Iterable[Any]) -> list[Tool]:
    return [make_tool(fn) for fn in functions if callable(fn) and hasattr(fn, _TOOL_MARK)]


@dataclass
class DomainState:
    """A domain's whole mutable world: `db` is the agent side, `user` the user's own state (dual control).

    `copy()` gives a session its own state cheaply: dict-valued fields become copy-on-write views of the
    shared tables (see domains/cow.py), everything else is deep-copied (small by construction).
    """

    db: BaseModel
    user: BaseModel | None = None

    def copy(self) -> DomainState:
        return DomainState(_cow_copy(self.db), _cow_copy(self.user) if self.user is not None else None)

    def sections(self) -> list[tuple[str, BaseModel | None]]:
        return [("db", self.db), ("user", self.user)]

    def to_dict(self) -> dict[str, Any]:
        return {name: model.model_dump(mode="json") if model is not None else None for name, model in self.sections()}

    def hash(self) -> str:
        """Content hash: equal for equal states however they were reached; costs what changed since the base."""
        parts = []
        for section, model in self.sections():
            if model is None:
                parts.append(f"{section}:null")
                continue
            for name in type(model).model_fields:
                value = getattr(model, name)
                digest = table_digest(value) if isinstance(value, dict | list) else state_hash(value)
                parts.append(f"{section}.{name}:{digest}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def diff(self, expected: DomainState, limit: int = 20) -> list[str]:
        """Readable differences from `expected`, looking only at entries either side changed where it can."""
        from eigenloop.checkers.evaluate import diff_states

        lines: list[str] = []
        for (section, mine), (_, theirs) in zip(self.sections(), expected.sections(), strict=True):
            if mine is None or theirs is None:
                if mine is not theirs:
                    lines.append(f"{section}: present on one side only")
                continue
            for name in type(mine).model_fields:
                a, b = getattr(mine, name), getattr(theirs, name)
                path = f"{section}.{name}"
                if isinstance(a, CowDict | CowList) and a.same_origin(b):
                    keys = sorted(a.changed_keys() | b.changed_keys(), key=str)
                    a, b = ({k: _entry(v, k) for k in keys} for v in (a, b))
                lines += diff_states(to_jsonable(a), to_jsonable(b), path, limit - len(lines))
                if len(lines) >= limit:
                    return lines[:limit]
        return lines

    def patched(self, patch: dict[str, Any]) -> DomainState:
        """A new state with a JSON merge patch (RFC 7386) applied, validated entry by entry by the models."""
        unknown = set(patch) - {"db", "user"}
        if unknown:
            raise ValueError(f"initial state patch has unknown sections {sorted(unknown)}; use 'db' and 'user'")
        state = self.copy()
        for section, model in state.sections():
            if section not in patch:
                continue
            if model is None:
                raise ValueError(f"initial state patch sets '{section}' but this domain has none")
            _patch_model(model, patch[section], section)
        return state


def _entry(table: Any, key: Any) -> Any:
    """An entry for the diff, read without taking a private copy; `None` where it does not exist."""
    if isinstance(table, dict):
        return dict.get(table, key)
    return list.__getitem__(table, key) if 0 <= key < len(table) else None


def _cow_copy(model: BaseModel) -> BaseModel:
    values = {name: cow_view(value) for name, value in model.__dict__.items()}
    return type(model).model_construct(_fields_set=model.model_fields_set, **values)


def _patch_model(model: BaseModel, patch: Any, where: str) -> None:
    if not isinstance(patch, dict):
        raise ValueError(f"{where}: the patch must be an object")
    fields = type(model).model_fields
    for name, sub in patch.items():
        if name not in fields:
            raise ValueError(f"{where}.{name}: no such field")
        annotation: Any = fields[name].annotation
        current = getattr(model, name)
        if isinstance(current, dict) and isinstance(sub, dict) and get_origin(annotation) is dict:
            entry_type = TypeAdapter(get_args(annotation)[1])
            for key, entry_patch in sub.items():
                if entry_patch is None:
                    current.pop(key, None)
                    continue
                base = to_jsonable(current[key]) if key in current else None
                try:
                    current[key] = entry_type.validate_python(merge_patch(base, entry_patch))
                except ValidationError as exc:
                    raise ValueError(f"{where}.{name}.{key}: {exc.errors()[0]['msg']}") from None
        else:
            try:
                merged = merge_patch(to_jsonable(current), sub)
                setattr(model, name, TypeAdapter(annotation).validate_python(merged))
            except ValidationError as exc:
                raise ValueError(f"{where}.{name}: {exc.errors()[0]['msg']}") from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), default=str)


def state_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


@dataclass(frozen=True)
class Scenario:
    """A goal that is possible (or deliberately not allowed) for concrete entities of a domain's state.

    The generator's scenario planner draws these; `allowed` says whether the policy permits the goal for
    these entities, so refusal tasks are sampled as deliberately as action tasks.
    """

    goal: str
    entities: dict[str, str]
    allowed: bool
    policy_rule: str
    notes: str = ""


ScenarioSampler = Callable[[DomainState, random.Random], Scenario | None]


@dataclass(eq=False)  # identity semantics: a domain is a singleton and a cache key
class Domain:
    """A folder-shaped plug-in. Built-ins live in eigenloop/domains/<name>/ and expose `DOMAIN`."""

    name: str
    description: str
    policy: str
    make_state: Callable[[int], DomainState]
    tools: list[Tool]
    assertions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    # Functions only a task's initial_state.actions may call (tau2's set_user_info, break_apn_settings, ...):
    # fn(state, **arguments); never offered to the agent or the user.
    setup_functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    # goal name -> sampler returning a Scenario for that goal (None when the state offers no candidate).
    samplers: dict[str, ScenarioSampler] = field(default_factory=dict)
    # Called after every successful tool call and after setup, e.g. to derive the user's device state
    # from the agent DB in dual control (tau2's "sync").
    sync: Callable[[DomainState], None] | None = None
    # Builds the state from a tau2-bench data directory (db.json / db.toml, user_db.toml).
    from_tau2: Callable[[Any], DomainState] | None = None

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"domain {self.name}: duplicate tool names {sorted(duplicates)}")
        self._by_name = {t.name: t for t in self.tools}

    def tool(self, name: str) -> Tool | None:
        return self._by_name.get(name)

    @property
    def agent_tools(self) -> list[Tool]:
        return [t for t in self.tools if t.side is Side.AGENT]

    @property
    def user_tools(self) -> list[Tool]:
        return [t for t in self.tools if t.side is Side.USER]

    def initial_state(self, seed: int = 0) -> DomainState:
        return self.make_state(seed)
