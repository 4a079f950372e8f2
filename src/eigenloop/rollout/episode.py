"""One episode with a policy model: the user speaks, the policy answers in tokens, tools run, the checker scores.

The policy's turns stay token ids from sampling to the trajectory (`DialogueTokens`); what they say is read back
only to act on it (tool calls for the environment, text for the user). A malformed tool call is answered with a
tool error turn and counted in `format_errors`. Limits end the episode as TRUNCATED with the cause in
`termination` and it is still scored; an InfraError from any service propagates to the caller, which retries
the episode elsewhere or drops it (never scored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as upb
from eigenloop.rollout.failures import TurnDeadlineError
from eigenloop.rollout.policy import PolicyClient
from eigenloop.rollout.services import EnvironmentSession, UserSession
from eigenloop.rollout.tokens import DialogueTokens, read_policy_turn

MALFORMED_CALL = (
    'Error: malformed tool call: write <tool_call>{"name": "<tool>", "arguments": {...}}</tool_call> '
    "with a JSON object inside"
)


class EpisodeConfig(BaseModel):
    """Limits and sampling of the policy in one episode."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_turns: int = Field(default=16, ge=1, description="policy turns (tool-calling turns included)")
    max_tokens: int = Field(
        default=4096,
        ge=1,
        description="tokens in the whole episode, prompt included; an environment or user reply that crosses it "
        "ends the episode and is cut from the token trace (not from the messages)",
    )
    max_new_tokens: int = Field(default=256, ge=1, description="tokens in one policy turn")
    turn_deadline_s: float = Field(default=120.0, gt=0, description="wall time one policy turn may take")
    temperature: float = Field(default=1.0, ge=0, description="0: greedy")
    top_p: float = Field(default=1.0, ge=0, le=1)
    top_k: int = Field(default=0, ge=0)
    system_prompt: str | None = Field(default=None, description="the agent's system prompt; None: the domain's policy")
    tools_in_prompt: bool = Field(
        default=True,
        description="list the tool schemas in the system turn; small from-scratch models learn their tools from SFT "
        "instead, with far shorter prompts (their SFT data must be tokenized the same way)",
    )


class _User(Protocol):
    def tool_results(self, results: Sequence[pb.ToolResult]) -> upb.UserTurn: ...


def hear_user(
    turn: upb.UserTurn,
    run_calls: Callable[[Sequence[pb.ToolCall]], list[pb.ToolResult]],
    user: _User,
    record: Callable[[pb.Message], None],
    turns: list[upb.UserTurn],
) -> upb.UserTurn:
    """Record the user's turn (message in `record`, turn in `turns`); while the user calls its own tools (dual
    control), run them in the episode's environment and hand back the results. Returns the user's last turn."""
    while True:
        turns.append(turn)
        record(pb.Message(role=pb.ROLE_USER, content=turn.content, tool_calls=list(turn.tool_calls)))
        if not turn.tool_calls or turn.stop:
            return turn
        results = run_calls(list(turn.tool_calls))
        for result in results:
            record(pb.Message(role=pb.ROLE_TOOL, content=result.content, tool_result=result))
        turn = user.tool_results(results)


def _turn_seed(seed: int, turn: int) -> int:
    return (seed * 1_000_003 + turn) % (2**63)


def run_episode(
    task: pb.Task,
    *,
    policy: PolicyClient,
    env: EnvironmentSession,
    user: UserSession,
    tokenizer: Any,
    config: EpisodeConfig,
    seed: int,
) -> pb.Trajectory:
    """Play `task` with the opened `env` and `user` (neither closed here). Raises InfraError on a service failure."""
    messages: list[pb.Message] = []
    user_turns: list[upb.UserTurn] = []
    dialogue = DialogueTokens(
        tokenizer,
        env.tools if config.tools_in_prompt else (),
        env.policy if config.system_prompt is None else config.system_prompt,
    )
    budget = min(config.max_tokens, policy.max_model_len)

    def hear(turn: upb.UserTurn) -> upb.UserTurn:
        start = len(messages)
        last = hear_user(turn, env.call_many, user, messages.append, user_turns)
        dialogue.extend(messages[start:])
        return last

    turn = hear(user.turn)
    turns = format_errors = 0
    termination = ""
    while not termination:
        if turn.stop:
            termination = "user_max_turns" if turn.stop_reason == upb.STOP_REASON_MAX_TURNS else "user_stop"
            break
        if turns >= config.max_turns:
            termination = "max_turns"
            break
        prompt = dialogue.prompt()
        room = budget - len(prompt)
        if room <= 0:
            termination = "max_tokens"
            break
        sampling = pb.SamplingParams(
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            max_new_tokens=min(config.max_new_tokens, room),
            stop_token_ids=sorted(dialogue.stop_token_ids),
            seed=_turn_seed(seed, turns),
        )
        try:
            sample = policy.generate(prompt, sampling, config.turn_deadline_s)
        except TurnDeadlineError:
            termination = "turn_deadline"
            break
        turns += 1
        said = read_policy_turn(tokenizer, sample.token_ids)
        dialogue.add_policy_turn(sample.token_ids, sample.logprobs, sample.policy_version, said.message)
        messages.append(said.message)
        replies: list[pb.Message] = []
        if said.malformed:
            format_errors += 1
            error = pb.ToolResult(content=MALFORMED_CALL, error=True, error_kind=pb.TOOL_ERROR_KIND_INVALID_JSON)
            replies.append(pb.Message(role=pb.ROLE_TOOL, content=error.content, tool_result=error))
        if said.message.tool_calls:
            for result in env.call_many(list(said.message.tool_calls)):
                replies.append(pb.Message(role=pb.ROLE_TOOL, content=result.content, tool_result=result))
        if replies:
            messages.extend(replies)
            dialogue.extend(replies)
        if len(dialogue.token_ids) >= budget:
            termination = "max_tokens"
        elif not replies:
            turn = hear(user.agent_message(said.message.content))

    if not all(t.validity.valid for t in user_turns):
        status = pb.EPISODE_STATUS_SIMULATOR_INVALID
    elif termination == "user_stop":
        status = pb.EPISODE_STATUS_COMPLETED
    else:
        status = pb.EPISODE_STATUS_TRUNCATED
    return pb.Trajectory(
        task_id=task.id,
        domain=task.domain,
        messages=messages,
        reward=env.evaluate(messages),
        status=status,
        termination=termination,
        tokens=dialogue.trace(budget),
        format_errors=format_errors,
    )
