"""Validation agents and the near-duplicate detector.

Tried: a gold call tampered after generation (replay no longer passes), a checker emptied to the state alone on
a task that changes nothing, the same task twice (near-duplicate), an unknown domain; MinHash similarity on
random token sets (identical → 1, disjoint → ~0).
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.synthesis.diversity import Fingerprint, NearDuplicateIndex, signature, similarity
from eigenloop.synthesis.validation import TaskValidator
from tests.synthesis.helpers import evolved, tasks


def _failed(report: pb.ValidationReport) -> set[str]:
    return {v.category for v in report.verdicts if not v.passed}


def test_accepts_good_tasks_with_a_mutation_score() -> None:
    validator = TaskValidator()
    for task in tasks("toy", 4, evolved("toy")):
        report = validator.validate(task)
        assert report.accepted, report
        strength = next(v for v in report.verdicts if v.agent == "checker_strength")
        assert strength.score >= 0.9


def test_rejects_a_task_whose_gold_replay_fails_its_checker() -> None:
    task = next(t for t in tasks("toy", 8, evolved("toy")) if t.checker.required_actions)
    arguments = json.loads(task.checker.required_actions[0].call.arguments_json)
    key = next(iter(arguments))
    arguments[key] = "X0000000"
    task.checker.required_actions[0].call.arguments_json = json.dumps(arguments)
    task.checker.required_actions[0].match = pb.ARGUMENT_MATCH_ALL
    assert "not_executable" in _failed(TaskValidator().validate(task))


def test_rejects_near_duplicates_of_accepted_tasks() -> None:
    validator = TaskValidator()
    task = tasks("toy", 1, evolved("toy"))[0]
    assert validator.validate(task).accepted
    twin = pb.Task()
    twin.CopyFrom(task)
    twin.id = "twin"
    report = validator.validate(twin)
    assert _failed(report) == {"near_duplicate"}
    assert task.id in next(v.reason for v in report.verdicts if not v.passed)


def test_unknown_domain_is_a_verdict_not_a_crash() -> None:
    report = TaskValidator().validate(pb.Task(id="x", domain="atlantis"))
    assert not report.accepted and "unknown domain" in report.verdicts[0].reason


tokens = st.sets(st.text(min_size=1, max_size=6), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None)
@given(tokens, tokens)
def test_minhash_estimates_jaccard(a: set[str], b: set[str]) -> None:
    assert similarity(signature(a), signature(a)) == 1.0
    if not a & b:
        assert similarity(signature(a), signature(b)) < 0.5


def test_index_finds_only_similar_tasks() -> None:
    index = NearDuplicateIndex()
    first, other = tasks("toy", 2, evolved("toy"), seed=4)
    index.add(Fingerprint.of(first))
    assert index.nearest(Fingerprint.of(first)) == (first.id, 1.0)
    assert index.nearest(Fingerprint.of(other)) is None
