"""An episode with a scripted agent that replays a task's reference dialogue.

It exercises the real episode flow without a policy model: the agent's tool calls run in the toolenv
session, the user simulator answers the agent's text, the user's own tool calls run in the same session
(dual control), and the checker scores the result. Used by `eigenloop user-sim replay` and by tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import user_sim_pb2 as upb
from eigenloop.rollout.episode import hear_user


class Environment(Protocol):
    def call(self, call: pb.ToolCall) -> pb.ToolResult: ...

    def evaluate(self, messages: Sequence[pb.Message] = (), checker: pb.Checker | None = None) -> pb.Reward: ...


class SimulatedUser(Protocol):
    turn: upb.UserTurn

    def agent_message(self, content: str) -> upb.UserTurn: ...

    def tool_results(self, results: Sequence[pb.ToolResult]) -> upb.UserTurn: ...


@dataclass
class ScriptedEpisode:
    messages: list[pb.Message] = field(default_factory=list)
    user_turns: list[upb.UserTurn] = field(default_factory=list)
    reward: pb.Reward | None = None

    def trajectory(self, task: pb.Task) -> pb.Trajectory:
        user_stopped = bool(self.user_turns) and self.user_turns[-1].stop
        valid = all(t.validity.valid for t in self.user_turns)
        return pb.Trajectory(
            task_id=task.id,
            domain=task.domain,
            messages=self.messages,
            reward=self.reward,
            status=pb.EPISODE_STATUS_COMPLETED if valid else pb.EPISODE_STATUS_SIMULATOR_INVALID,
            termination="user_stop" if user_stopped else "agent_stop",
        )


def replay_reference(
    task: pb.Task,
    env: Environment,
    user: SimulatedUser,
    on_message: Callable[[pb.Message], None] = lambda message: None,
) -> ScriptedEpisode:
    """Play the task's reference assistant turns against `user` (already opened) in `env`, then evaluate."""
    episode = ScriptedEpisode()

    def record(message: pb.Message) -> None:
        episode.messages.append(message)
        on_message(message)

    def hear(turn: upb.UserTurn) -> upb.UserTurn:
        return hear_user(turn, lambda calls: [env.call(c) for c in calls], user, record, episode.user_turns)

    turn = hear(user.turn)
    for message in task.reference_dialogue:
        if turn.stop or message.role != pb.ROLE_ASSISTANT:
            continue
        if message.tool_calls:
            record(pb.Message(role=pb.ROLE_ASSISTANT, content=message.content, tool_calls=list(message.tool_calls)))
            for call in message.tool_calls:
                result = env.call(call)
                record(pb.Message(role=pb.ROLE_TOOL, content=result.content, tool_result=result))
        elif message.content:
            record(pb.Message(role=pb.ROLE_ASSISTANT, content=message.content))
            turn = hear(user.agent_message(message.content))
    episode.reward = env.evaluate(episode.messages)
    return episode
