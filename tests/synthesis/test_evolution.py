"""Evolution: failures counted and charged to the responsible agent, candidates scored, the best kept (elitist).

Tried: a round of the default prompts on toy (evolution must fix it), a scorer under which every candidate is
worse than the current set (the current set is kept), an empty prompt set.
"""

from __future__ import annotations

import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import validator_pb2 as vpb
from eigenloop.llm.procedural import ProceduralBackend
from eigenloop.synthesis import prompts as P
from eigenloop.synthesis.evolution import Evolver
from eigenloop.synthesis.pipeline import ValidationCore
from eigenloop.synthesis.validation import TaskValidator, generation_failure_report
from tests.synthesis.helpers import generator, tasks


def _round_one_reports() -> tuple[pb.PromptSet, list[pb.ValidationReport]]:
    current = P.default_prompt_set("toy")
    validator = TaskValidator()
    reports = [validator.validate(t) for t in tasks("toy", 12, current)]
    reports.append(generation_failure_report("failed-1", P.PLANNER, "no scenario"))
    return current, reports


def test_evolution_fixes_the_default_prompts() -> None:
    current, reports = _round_one_reports()
    core = ValidationCore(ProceduralBackend(), generator())
    response = core.evolve(vpb.EvolveRequest(current=current, reports=reports, round=2, seed=0, minibatch_size=8))
    charged = {(f.category, f.responsible_agent) for f in response.failures}
    assert ("checker_passes_empty", P.CHECKER_WRITER) in charged
    assert ("generation_failed", P.PLANNER) in charged
    assert response.changed
    best = response.prompt_set
    assert best.parent_version == current.version and best.round == 2 and best.version != current.version
    assert max(c.score for c in response.candidates) == pytest.approx(
        next(c.score for c in response.candidates if c.prompt_set.version == best.version)
    )
    assert core.history("toy").rounds[-1] == response


def test_keeps_the_current_set_when_no_candidate_beats_it() -> None:
    current, reports = _round_one_reports()

    def score(prompt_set: pb.PromptSet, seed: int, round_: int, size: int) -> float:
        return 0.5 if prompt_set.version == current.version else 0.1

    response = Evolver(ProceduralBackend(), score).evolve(
        vpb.EvolveRequest(current=current, reports=reports, round=2, minibatch_size=4)
    )
    assert not response.changed
    assert response.prompt_set == current
    assert response.candidates  # they were proposed and scored, just not better


def test_an_invalid_current_prompt_set_is_refused() -> None:
    evolver = Evolver(ProceduralBackend(), lambda *_: 0.0)
    with pytest.raises(P.PromptSetError, match="empty"):
        evolver.evolve(vpb.EvolveRequest(current=pb.PromptSet(domain="toy")))
