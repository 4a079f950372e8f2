"""The procedural backend: deterministic, domain-aware, and imperfect only where its directives say so.

Tried: the same brief twice, a message without a brief, a brief for an agent it does not play, a domain it
has no reference procedure for; each dialogue-writer directive switched off and on (airline, whose policy
demands an explicit "yes"); the checker writer's basis.
"""

from __future__ import annotations

import json

import pytest

from eigenloop.llm.base import BackendError, ChatMessage
from eigenloop.llm.factory import BackendConfig, make_backend
from eigenloop.llm.procedural import ProceduralBackend, brief_message
from eigenloop.synthesis import prompts as P
from eigenloop.synthesis.validation import CHECKER_STRENGTH, TaskValidator, ValidationSettings
from tests.synthesis.helpers import EVOLVED, evolved, prompt_set, tasks


def _ask(brief: dict[str, object]) -> str:
    return ProceduralBackend().complete([ChatMessage("user", brief_message(brief))]).text


def test_factory_builds_it_and_it_labels_its_output() -> None:
    backend = make_backend(BackendConfig(kind="procedural", model="procedural"))
    assert isinstance(backend, ProceduralBackend)
    brief = {
        "agent": P.PLANNER,
        "domain": "toy",
        "seed": 3,
        "settings": P.PlannerSettings().model_dump(mode="json"),
        "input": {"run_seed": 0, "round": 1, "avoid": []},
    }
    completion = backend.complete([ChatMessage("user", brief_message(brief))])
    assert completion.backend == "procedural"
    assert completion.text == _ask(brief)  # same brief, same answer
    assert json.loads(completion.text)["scenario"]["goal"]


def test_refuses_what_it_cannot_answer() -> None:
    with pytest.raises(BackendError, match="BRIEF"):
        ProceduralBackend().complete([ChatMessage("user", "write me a task")])
    with pytest.raises(BackendError, match="does not play agent 'poet'"):
        _ask({"agent": "poet", "domain": "toy", "seed": 0, "settings": {}, "input": {}})


def _verdicts(domain: str, **settings: object) -> dict[str, set[str]]:
    """Failure categories per validator over a few generated tasks (mutation testing off: it is not the point)."""
    validator = TaskValidator(ValidationSettings(disabled=frozenset({CHECKER_STRENGTH})))
    found: dict[str, set[str]] = {}
    for task in tasks(domain, 12, prompt_set(domain, **{**EVOLVED, **settings})):
        for verdict in validator.validate(task, remember=False).verdicts:
            found.setdefault(verdict.agent, set()).add(verdict.category)
    return found


def test_all_directives_on_gives_clean_dialogues() -> None:
    assert _verdicts("airline") == {"executable": {""}, "policy": {""}, "consistency": {""}, "diversity": {""}}


def test_without_confirmation_directive_writes_break_the_policy() -> None:
    settings = P.DialogueWriterSettings(lookup_before_acting=True, ids_in_instruction=True)
    assert "policy_violation" in _verdicts("airline", dialogue_writer=settings)["policy"]


def test_without_lookups_or_ids_the_dialogue_is_inconsistent() -> None:
    no_lookups = P.DialogueWriterSettings(confirm_before_write=True, ids_in_instruction=True)
    assert "inconsistent" in _verdicts("airline", dialogue_writer=no_lookups)["consistency"]
    no_ids = P.DialogueWriterSettings(confirm_before_write=True, lookup_before_acting=True)
    assert "inconsistent" in _verdicts("airline", dialogue_writer=no_ids)["consistency"]


def test_state_only_checkers_pass_the_empty_trajectory_for_tasks_that_change_nothing() -> None:
    validator = TaskValidator()
    state_only = prompt_set("toy", **{**EVOLVED, P.CHECKER_WRITER: P.CheckerWriterSettings()})
    categories = {v.category for t in tasks("toy", 12, state_only) for v in validator.validate(t).verdicts}
    assert "checker_passes_empty" in categories
    strong = {v.category for t in tasks("toy", 12, evolved("toy")) for v in TaskValidator().validate(t).verdicts}
    assert strong == {""}


def test_unknown_reference_domain_is_a_clear_backend_error() -> None:
    from eigenloop.synthesis.reference import NoReferenceError, reference_task

    with pytest.raises(NoReferenceError, match="use an LLM backend"):
        reference_task("elsewhere", None, None, 0, None)  # type: ignore[arg-type]
