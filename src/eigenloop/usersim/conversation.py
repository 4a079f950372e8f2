"""One episode's user side: a small state machine over a UserPolicy.

    conv = Conversation(ProceduralUser(), task)
    turn = conv.open()                        # the user's first message
    turn = conv.agent_message("Sure, ...")    # the agent spoke
    turn = conv.tool_results([...])           # results of the user's own tool calls (dual control)

Every turn is checked (eigenloop.usersim.validity) and carries `validity`. The protocol is enforced with
ConversationError: open once, nothing after a stop, tool results exactly for the calls the user made and
before the next agent message. A policy's infrastructure failure (UserSimError) leaves the conversation as it
was before the call, so the caller may retry it or give the episode up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as us
from eigenloop.domains import UnknownDomainError, load_domain
from eigenloop.domains.base import Domain
from eigenloop.usersim._procedural import Event
from eigenloop.usersim.policies import ConversationView, UserPolicy
from eigenloop.usersim.validity import STOP_TOKEN, check_turn

DEFAULT_MAX_TURNS = 50


class ConversationError(Exception):
    """The caller broke the conversation protocol (the message says how); the conversation is unchanged."""


def resolve_domain(task: pb.Task) -> Domain | None:
    """The task's domain, or None when it names none or one that is not installed here."""
    if not task.domain:
        return None
    try:
        return load_domain(task.domain)
    except UnknownDomainError:
        return None


class Conversation:
    """The simulated user's side of one episode (see the module docstring).

    `domain` defaults to the task's domain (None if unknown: then the user has no tools). `max_turns` counts
    user turns; the turn that reaches it is a STOP with STOP_REASON_MAX_TURNS (0 means DEFAULT_MAX_TURNS).
    `sampling` is passed to the policy (temperature 0 unless set; `temperature` overrides just that field);
    `seed` makes runs reproducible.
    """

    def __init__(
        self,
        policy: UserPolicy,
        task: pb.Task,
        *,
        domain: Domain | Literal["auto"] | None = "auto",
        seed: int = 0,
        max_turns: int = DEFAULT_MAX_TURNS,
        sampling: pb.SamplingParams | None = None,
        temperature: float | None = None,
        episode_id: str = "",
    ) -> None:
        if max_turns < 0:
            raise ValueError(f"max_turns must be >= 0 (0 means the default {DEFAULT_MAX_TURNS}), got {max_turns}")
        self.policy = policy
        self.task = task
        self.domain = resolve_domain(task) if domain == "auto" else domain
        self.seed = seed
        self.max_turns = max_turns or DEFAULT_MAX_TURNS
        self.sampling = pb.SamplingParams()
        if sampling is not None:
            self.sampling.CopyFrom(sampling)
        if temperature is not None:
            if temperature < 0:
                raise ValueError(f"temperature must be >= 0, got {temperature}")
            self.sampling.temperature = temperature
        self.episode_id = episode_id
        self._history: list[pb.Message] = []
        self._turns: list[us.UserTurn] = []
        self._opened = False
        self._pending: dict[str, pb.ToolCall] = {}
        self._call_counter = 0

    @classmethod
    def from_open(
        cls, policy: UserPolicy, request: us.OpenConversation, *, domain: Domain | Literal["auto"] | None = "auto"
    ) -> Conversation:
        """A conversation for the UserSim service's OpenConversation request (seed from its sampling, if set)."""
        seed = request.sampling.seed if request.sampling.HasField("seed") else 0
        return cls(
            policy,
            request.task,
            domain=domain,
            seed=seed,
            max_turns=request.max_turns,
            sampling=request.sampling,
            episode_id=request.episode_id,
        )

    # --- state -------------------------------------------------------------------------------------------------

    @property
    def history(self) -> list[pb.Message]:
        """A copy of the conversation so far (agent messages are ROLE_ASSISTANT, the user's ROLE_USER)."""
        return [_copy(m) for m in self._history]

    @property
    def turns(self) -> list[us.UserTurn]:
        return [_copy(t) for t in self._turns]

    @property
    def turn(self) -> us.UserTurn:
        """The user's latest turn (the same attribute the remote conversation has)."""
        if not self._turns:
            raise ConversationError("no turn yet: open the conversation first")
        return _copy(self._turns[-1])

    @property
    def turn_count(self) -> int:
        return len(self._turns)

    @property
    def opened(self) -> bool:
        return self._opened

    @property
    def stopped(self) -> bool:
        return bool(self._turns) and self._turns[-1].stop

    @property
    def stop_reason(self) -> us.StopReason.ValueType:
        return self._turns[-1].stop_reason if self.stopped else us.STOP_REASON_UNSPECIFIED

    @property
    def pending_calls(self) -> list[pb.ToolCall]:
        """The user's tool calls still waiting for results."""
        return [_copy(c) for c in self._pending.values()]

    @property
    def valid(self) -> bool:
        """Whether every turn so far was valid."""
        return all(t.validity.valid for t in self._turns)

    @property
    def violations(self) -> list[str]:
        """Every violation so far, prefixed with its turn number."""
        return [f"turn {i}: {v}" for i, t in enumerate(self._turns, 1) for v in t.validity.violations]

    # --- protocol ----------------------------------------------------------------------------------------------

    def open(self) -> us.UserTurn:
        """The user's first message."""
        if self._opened:
            raise ConversationError("open() called twice: this conversation is already open")
        self._opened = True
        try:
            return self._next("open")
        except BaseException:
            self._opened = False
            raise

    def agent_message(self, text: str) -> us.UserTurn:
        """The agent said `text`; returns the user's answer."""
        self._check_can_continue("an agent message")
        if self._pending:
            ids = ", ".join(self._pending)
            raise ConversationError(
                f"an agent message arrived while the user's tool calls [{ids}] wait for results: "
                "send tool_results first"
            )
        return self._next("agent_message", [pb.Message(role=pb.ROLE_ASSISTANT, content=text)])

    def tool_results(self, results: Sequence[pb.ToolResult]) -> us.UserTurn:
        """Results of the user's tool calls from its previous turn, one per call (any order)."""
        self._check_can_continue("tool results")
        if not self._pending:
            raise ConversationError("tool results arrived but the user requested no tool calls")
        by_id: dict[str, pb.ToolResult] = {}
        for result in results:
            if result.call_id not in self._pending:
                expected = ", ".join(self._pending)
                raise ConversationError(
                    f"tool result for unknown call id {result.call_id!r}; the pending calls are [{expected}]"
                )
            if result.call_id in by_id:
                raise ConversationError(f"two tool results for call id {result.call_id!r}")
            by_id[result.call_id] = result
        missing = [call_id for call_id in self._pending if call_id not in by_id]
        if missing:
            raise ConversationError(f"missing tool results for call ids [{', '.join(missing)}]")
        messages = []
        for call_id, call in self._pending.items():
            result = _copy(by_id[call_id])
            if not result.name:
                result.name = call.name
            messages.append(pb.Message(role=pb.ROLE_TOOL, content=result.content, tool_result=result))
        return self._next("tool_results", messages)

    # --- internals ---------------------------------------------------------------------------------------------

    def _check_can_continue(self, what: str) -> None:
        if not self._opened:
            raise ConversationError(f"{what} before open(): open the conversation first")
        if self.stopped:
            reason = us.StopReason.Name(self.stop_reason)
            raise ConversationError(f"{what} after the user stopped ({reason}): this conversation is over")

    def _next(self, event: Event, incoming: Sequence[pb.Message] = ()) -> us.UserTurn:
        history_before = len(self._history)
        pending_before = dict(self._pending)
        counter_before = self._call_counter
        self._history.extend(incoming)
        self._pending = {}
        try:
            turn = self._produce(event)
        except BaseException:
            # Nothing happened: the caller may retry the same call.
            del self._history[history_before:]
            self._pending = pending_before
            self._call_counter = counter_before
            raise
        return turn

    def _produce(self, event: Event) -> us.UserTurn:
        number = len(self._turns) + 1
        if number >= self.max_turns:
            turn = us.UserTurn(content=STOP_TOKEN, stop=True, stop_reason=us.STOP_REASON_MAX_TURNS)
        else:
            view = ConversationView(
                task=self.task,
                domain=self.domain,
                history=tuple(self._history),
                event=event,
                turn=len(self._turns),
                max_turns=self.max_turns,
                seed=self.seed,
                sampling=self.sampling,
            )
            turn = _copy(self.policy.next_turn(view))
        for call in turn.tool_calls:
            self._call_counter += 1
            if not call.id:
                call.id = f"user_call_{self._call_counter}"
            if call.side == pb.TOOL_SIDE_UNSPECIFIED:
                call.side = pb.TOOL_SIDE_USER
        turn.ClearField("validity")
        turn.validity.CopyFrom(check_turn(turn, task=self.task, domain=self.domain, history=self._history))
        self._history.append(pb.Message(role=pb.ROLE_USER, content=turn.content, tool_calls=turn.tool_calls))
        self._turns.append(turn)
        if not turn.stop:
            self._pending = {c.id: c for c in turn.tool_calls}
        return _copy(turn)


_M = TypeVar("_M", pb.Message, pb.ToolCall, pb.ToolResult, us.UserTurn)


def _copy(message: _M) -> _M:
    clone = type(message)()
    clone.CopyFrom(message)
    return clone
