"""Small hand-made data for the training tests: short dialogues in a domain nobody serves (no tools, no policy
prompt), so sequences stay ~100 tokens and a tiny model trains in well under a second per step."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import write_jsonl
from tests.support import TEST_DEVICE

REASONS = {"I ordered it by mistake": "mistake", "I found it cheaper": "found_cheaper"}


def dialogue_task(i: int, rng: random.Random) -> pb.Task:
    order = f"O{rng.randint(10000, 99999)}"
    said, reason = rng.choice(sorted(REASONS.items()))
    call = pb.ToolCall(
        id="call_0", name="cancel_order", arguments_json=json.dumps({"order_id": order, "reason": reason})
    )
    return pb.Task(
        id=f"unit-{i:04d}",
        domain="unit",
        user=pb.UserScenario(instruction=f"Cancel order {order}: {said}."),
        reference_dialogue=[
            pb.Message(role=pb.ROLE_USER, content=f"Please cancel {order}, {said}."),
            pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
            pb.Message(
                role=pb.ROLE_TOOL,
                content='{"status": "cancelled"}',
                tool_result=pb.ToolResult(call_id="call_0", name="cancel_order", content='{"status": "cancelled"}'),
            ),
            pb.Message(role=pb.ROLE_ASSISTANT, content=f"Order {order} is cancelled."),
            pb.Message(role=pb.ROLE_USER, content="Thanks, bye. ###STOP###"),
        ],
    )


def write_tasks(path: Path, n: int = 24, seed: int = 0) -> Path:
    rng = random.Random(seed)
    write_jsonl(path, (dialogue_task(i, rng) for i in range(n)))
    return path


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def sft_config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    tasks = write_tasks(tmp / "tasks.jsonl")
    config: dict[str, Any] = {
        "run_dir": str(tmp / "run"),
        "seed": 0,
        "steps": 4,
        "batch_size": 4,
        "threads": 1,
        "model": {"init": {"preset": "tiny", "vocab_size": 300}, "device": TEST_DEVICE},
        "data": {"tasks": [str(tasks)], "max_length": 256, "eval_fraction": 0.2},
        "checkpoint": {"every": 2, "keep_last": 2},
        "eval_every": 2,
    }
    config.update(overrides)
    return config


def trajectory(
    tokenizer: Any,
    task: pb.Task,
    *,
    reward: float,
    group: str,
    index: int,
    status: int = pb.EPISODE_STATUS_COMPLETED,
    version: int = 0,
    logprob: float = -1.0,
) -> pb.Trajectory:
    """A trajectory whose tokens are the task's reference dialogue, as if the policy had sampled its turns."""
    from eigenloop.rollout.tokens import tokenize_dialogue

    tokens = tokenize_dialogue(tokenizer, task.reference_dialogue)
    mask = tokens.policy_mask
    spans, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append(pb.TurnSpan(start=start, end=i, policy_version=version))
            start = None
    return pb.Trajectory(
        task_id=task.id,
        domain=task.domain,
        messages=task.reference_dialogue,
        reward=pb.Reward(value=reward),
        status=status,  # type: ignore[arg-type]
        tokens=pb.TokenTrace(
            token_ids=tokens.token_ids,
            policy_mask=bytes(mask),
            logprobs=[logprob if m else 0.0 for m in mask],
            turns=spans,
        ),
        group_id=group,
        sample_index=index,
    )


def write_trajectories(path: Path, tokenizer: Any, n_groups: int = 6, group_size: int = 4, seed: int = 0) -> Path:
    """Groups with mixed rewards (plus one all-equal group and one infra failure, for the filters)."""
    rng = random.Random(seed)
    out = []
    for g in range(n_groups):
        task = dialogue_task(g, rng)
        for i in range(group_size):
            reward = 1.0 if g == 0 else float(rng.random() < 0.5 or i == 0) * float(i != 1)
            status = pb.EPISODE_STATUS_INFRA_FAILED if (g, i) == (1, 3) else pb.EPISODE_STATUS_COMPLETED
            out.append(trajectory(tokenizer, task, reward=reward, group=f"g{g}", index=i, status=status))
    write_jsonl(path, out)
    return path
