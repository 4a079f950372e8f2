"""A rollout manager wired embedded or distributed, side by side: each of policy, toolenv and user_sim runs in this
process unless an address is given for it (a host:port list, a DNS name or `kubernetes:///NS/SERVICE:PORT`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from eigenloop.rollout.manager import RolloutConfig, RolloutManager
from eigenloop.rollout.policy import PolicyClient, RemotePolicy
from eigenloop.rollout.services import (
    Environments,
    LocalEnvironments,
    LocalUsers,
    RemoteEnvironments,
    RemoteUsers,
    Users,
)
from eigenloop.usersim.policies import ProceduralUser


@contextmanager
def rollout_manager(
    model: Path,
    config: RolloutConfig,
    *,
    inference: str | None = None,
    toolenv: str | None = None,
    user_sim: str | None = None,
    auth_token: str | None = None,
    max_batch_size: int = 64,
) -> Iterator[RolloutManager]:
    """`model` is the policy's directory: its tokenizer always (the chat template), its weights when `inference`
    is None (a TransformersEngine here, batching every live episode's turn). In-process users are procedural."""
    from transformers import AutoTokenizer

    closers: list[Callable[[], None]] = []
    try:
        policy: PolicyClient
        if inference is None:
            from eigenloop.inference.engine import TransformersEngine
            from eigenloop.rollout.policy import LocalPolicy

            engine = TransformersEngine(model, max_batch_size=max_batch_size)
            closers.append(engine.close)
            policy = LocalPolicy(engine)
            tokenizer = engine.tokenizer
        else:
            remote = RemotePolicy(inference, auth_token=auth_token)
            closers.append(remote.close)
            policy = remote
            tokenizer = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
        environments: Environments
        if toolenv is None:
            environments = LocalEnvironments()
        else:
            remote_envs = RemoteEnvironments(toolenv, auth_token=auth_token)
            closers.append(remote_envs.close)
            environments = remote_envs
        users: Users
        if user_sim is None:
            users = LocalUsers(ProceduralUser())
        else:
            remote_users = RemoteUsers(user_sim, auth_token=auth_token)
            closers.append(remote_users.close)
            users = remote_users
        with RolloutManager(policy, environments, users, tokenizer, config) as manager:
            yield manager
    finally:
        for close in reversed(closers):
            close()
