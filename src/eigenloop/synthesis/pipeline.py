"""The validator's side of the loop, shared by the validator service and embedded runs: the accepted set of
every run (for diversity), validation of candidates, and evolution scored on freshly generated minibatches."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import generator_pb2 as gpb
from eigenloop.contracts.v1 import validator_pb2 as vpb
from eigenloop.llm.base import ChatBackend
from eigenloop.synthesis.evolution import Evolver
from eigenloop.synthesis.validation import TaskValidator, ValidationSettings

MINIBATCH_ROUND_OFFSET = 1000  # minibatch tasks come from rounds of their own, never a real round's tasks


class Generation(Protocol):
    def generate(
        self, domain: str, count: int, seed: int, prompt_set: pb.PromptSet, round_: int
    ) -> Iterator[gpb.GeneratedTask]: ...


def settings_from(options: vpb.ValidationOptions) -> ValidationSettings:
    return ValidationSettings(
        min_mutation_score=options.min_mutation_score or ValidationSettings.min_mutation_score,
        skip_diversity=options.skip_diversity,
        disabled=frozenset(options.disabled_agents),
    )


@dataclass
class ValidationCore:
    backend: ChatBackend
    generation: Generation
    _runs: dict[tuple[str, str], TaskValidator] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.evolver = Evolver(self.backend, self._minibatch_yield)
        self._evolve_run = ""

    def _validator(self, domain: str, run_id: str, settings: ValidationSettings) -> TaskValidator:
        with self._lock:
            validator = self._runs.setdefault((domain, run_id), TaskValidator())
        validator.settings = settings
        return validator

    def validate(
        self,
        tasks: Sequence[pb.Task],
        options: vpb.ValidationOptions,
        run_id: str = "",
        accepted: Iterable[pb.Task] = (),
    ) -> Iterator[pb.ValidationReport]:
        settings = settings_from(options)
        for task in accepted:
            self._validator(task.domain, run_id, settings).remember([task])
        for task in tasks:
            yield self._validator(task.domain, run_id, settings).validate(task)

    def evolve(self, request: vpb.EvolveRequest) -> vpb.EvolveResponse:
        with self._lock:  # one evolution at a time: it is scored against one run's accepted set
            self._evolve_run = request.run_id
            return self.evolver.evolve(request)

    def history(self, domain: str) -> vpb.EvolutionHistory:
        return vpb.EvolutionHistory(rounds=self.evolver.history.get(domain, []))

    def _minibatch_yield(self, prompt_set: pb.PromptSet, seed: int, round_: int, size: int) -> float:
        key = (prompt_set.domain, self._evolve_run)
        validator = self._runs.get(key) or TaskValidator()
        accepted = 0
        for generated in self.generation.generate(
            prompt_set.domain, size, seed, prompt_set, MINIBATCH_ROUND_OFFSET + round_
        ):
            if generated.HasField("task") and validator.validate(generated.task, remember=False).accepted:
                accepted += 1
        return accepted / size
