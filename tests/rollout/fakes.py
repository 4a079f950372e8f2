"""Stand-ins for the policy and the services, for manager tests that need no model or server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.rollout.failures import InfraError
from eigenloop.rollout.policy import Sample
from eigenloop.rollout.services import EnvironmentSession, LocalEnvironments


class ScriptedPolicy:
    """Answers the n-th assistant turn of an episode with `texts[n]` (the last one repeats), as token ids
    ending in the turn-end marker; `version(call_number)` is the policy version it reports."""

    max_model_len = 4096

    def __init__(self, tokenizer: Any, texts: Sequence[str], version: Callable[[int], int] = lambda n: 0) -> None:
        self.tokenizer = tokenizer
        self.texts = list(texts)
        self.version = version
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompts: list[list[int]] = []
        self._lock = threading.Lock()
        self._opener = tokenizer.encode("<|im_start|>assistant", add_special_tokens=False)

    def _turn(self, prompt: Sequence[int]) -> int:
        n, k = 0, len(self._opener)
        for i in range(len(prompt) - k + 1):
            if list(prompt[i : i + k]) == self._opener:
                n += 1
        return n - 1

    def generate(self, prompt_ids: Sequence[int], sampling: pb.SamplingParams, timeout_s: float) -> Sample:
        with self._lock:
            number = self.calls
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.prompts.append(list(prompt_ids))
        try:
            text = self.texts[min(self._turn(prompt_ids), len(self.texts) - 1)]
            ids = self.tokenizer.encode(text, add_special_tokens=False)[: sampling.max_new_tokens]
            finish = "length"
            if len(ids) < sampling.max_new_tokens:
                ids.append(self.tokenizer.eos_token_id)
                finish = "stop"
            return Sample(ids, [-0.25] * len(ids), finish, self.version(number))
        finally:
            with self._lock:
                self.in_flight -= 1


class FlakyEnvironments:
    """LocalEnvironments whose `open` fails as replica "bad:1" while `fail(attempt_number)` says so."""

    def __init__(self, fail: Callable[[int], bool]) -> None:
        self.inner = LocalEnvironments()
        self.fail = fail
        self.opens = 0
        self.avoided: list[list[str]] = []
        self._lock = threading.Lock()

    def open(self, task: pb.Task, *, avoid: Sequence[str] = ()) -> EnvironmentSession:
        with self._lock:
            n = self.opens
            self.opens += 1
            self.avoided.append(list(avoid))
        if self.fail(n):
            raise InfraError("toolenv", "bad:1", "UNAVAILABLE: connection refused")
        return self.inner.open(task, avoid=avoid)
