"""The built-in airline tasks: complete, grounded, deterministic and discriminating."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.airline import DOMAIN
from eigenloop.domains.airline.db import AirlineDB
from eigenloop.domains.airline.samplers import SAMPLERS
from eigenloop.domains.airline.tasks import sample_tasks
from eigenloop.domains.base import ToolKind
from eigenloop.env.session import EnvSession
from eigenloop.protocol import arguments_of, tool_call

SEED = 0


@pytest.fixture(scope="module")
def tasks() -> list[pb.Task]:
    return sample_tasks(SEED)


def _goal(task: pb.Task) -> str:
    return task.id.removeprefix("airline-").rsplit("-", 1)[0]


def _refusal(task: pb.Task) -> bool:
    return _goal(task).endswith("_not_allowed")


def _is_write(call: pb.ToolCall) -> bool:
    tool = DOMAIN.tool(call.name)
    return tool is not None and tool.kind is ToolKind.WRITE


def _reward(task: pb.Task, calls: Iterable[pb.ToolCall], messages: Sequence[pb.Message], seed: int = SEED) -> pb.Reward:
    session = EnvSession(DOMAIN, task=task, seed=seed)
    for call in calls:
        session.call(call)
    return session.evaluate(messages)


def _lookups(task: pb.Task) -> list[pb.ToolCall]:
    return [c for c in task.checker.gold_actions if not _is_write(c)]


def _with(call: pb.ToolCall, **changes: object) -> pb.ToolCall:
    return tool_call(call.name, {**arguments_of(call), **changes})


def test_tasks_cover_every_goal_two_or_three_times(tasks: list[pb.Task]) -> None:
    counts = Counter(_goal(t) for t in tasks)
    assert set(counts) == set(SAMPLERS)
    assert all(2 <= n <= 3 for n in counts.values()), counts


def test_ids_are_unique_and_well_formed(tasks: list[pb.Task]) -> None:
    ids = [t.id for t in tasks]
    assert len(ids) == len(set(ids))
    for task in tasks:
        assert task.domain == "airline"
        assert task.id.startswith(f"airline-{_goal(task)}-")
        assert task.description and task.user.instruction and task.user.persona
        assert task.provenance.source == "builtin" and task.provenance.seed == SEED
        assert task.checker.gold_actions and task.reference_dialogue


def test_same_seed_same_tasks(tasks: list[pb.Task]) -> None:
    again = sample_tasks(SEED)
    assert [t.SerializeToString(deterministic=True) for t in again] == [
        t.SerializeToString(deterministic=True) for t in tasks
    ]


def test_gold_calls_are_valid_and_the_dialogue_shows_their_real_results(tasks: list[pb.Task]) -> None:
    for task in tasks:
        session = EnvSession(DOMAIN, task=task, seed=SEED)
        results = [session.call(c) for c in task.checker.gold_actions]
        assert not [r.content for r in results if r.error], task.id
        dialogue = task.reference_dialogue
        calls = [c for m in dialogue for c in m.tool_calls]
        assert [(c.name, arguments_of(c)) for c in calls] == [
            (c.name, arguments_of(c)) for c in task.checker.gold_actions
        ], task.id
        tool_messages = [m for m in dialogue if m.role == pb.ROLE_TOOL]
        assert [m.content for m in tool_messages] == [r.content for r in results], task.id
        for i, message in enumerate(dialogue):
            if message.tool_calls:  # one call per turn, answered right away by its tool message
                assert len(message.tool_calls) == 1 and not message.content
                assert dialogue[i + 1].tool_result.call_id == message.tool_calls[0].id
        assert dialogue[0].role == pb.ROLE_USER
        final = dialogue[-1]
        assert final.role == pb.ROLE_ASSISTANT and final.content and not final.tool_calls, task.id
        for info in task.checker.communicate_info:
            assert info.lower() in final.content.lower().replace(",", ""), (task.id, info)


def test_gold_replay_with_the_reference_dialogue_scores_one(tasks: list[pb.Task]) -> None:
    for task in tasks:
        reward = _reward(task, task.checker.gold_actions, task.reference_dialogue)
        assert reward.value == 1.0, (task.id, reward.failure_reason, reward.state_diff)
        assert not reward.checker_error


def test_an_empty_trajectory_scores_below_one(tasks: list[pb.Task]) -> None:
    for task in tasks:
        assert _reward(task, [], []).value < 1.0, task.id


def test_checkers_follow_tau2_airline_plus_action(tasks: list[pb.Task]) -> None:
    for task in tasks:
        checker = task.checker
        basis = set(checker.reward_basis)
        assert pb.REWARD_COMPONENT_STATE in basis
        assert (pb.REWARD_COMPONENT_COMMUNICATE in basis) == bool(checker.communicate_info)
        assert (pb.REWARD_COMPONENT_ACTION in basis) == bool(checker.required_actions or checker.forbidden_actions)
        assert (pb.REWARD_COMPONENT_ASSERTION in basis) == bool(checker.assertions)
        writes = [c for c in checker.gold_actions if _is_write(c)]
        for write in writes:  # every gold write is required, on its decisive arguments
            assert any(
                m.call.name == write.name and m.match == pb.ARGUMENT_MATCH_LISTED for m in checker.required_actions
            )
        if _refusal(task):
            assert checker.forbidden_actions and checker.communicate_info, task.id
        elif not writes:  # informational: the answer must be told
            assert checker.communicate_info and checker.required_actions, task.id


def test_refusals_make_no_write(tasks: list[pb.Task]) -> None:
    refusals = [t for t in tasks if _refusal(t)]
    assert refusals
    for task in refusals:
        assert not any(_is_write(c) for c in task.checker.gold_actions), task.id
        assert not any(_is_write(c) for m in task.reference_dialogue for c in m.tool_calls), task.id


def test_doing_what_a_refusal_forbids_scores_below_one(tasks: list[pb.Task]) -> None:
    for task in (t for t in tasks if _refusal(t)):
        for forbidden in task.checker.forbidden_actions:
            calls = [*_lookups(task), forbidden.call]
            reward = _reward(task, calls, task.reference_dialogue)
            assert reward.value < 1.0, (task.id, forbidden.call.name)


def test_skipping_the_writes_scores_below_one(tasks: list[pb.Task]) -> None:
    for task in tasks:
        if any(_is_write(c) for c in task.checker.gold_actions):
            assert _reward(task, _lookups(task), task.reference_dialogue).value < 1.0, task.id


def test_writing_on_the_wrong_entity_scores_below_one(tasks: list[pb.Task]) -> None:
    db = EnvSession(DOMAIN, seed=SEED).state.db
    assert isinstance(db, AirlineDB)
    for task in tasks:
        calls = list(task.checker.gold_actions)
        if not any(_is_write(c) for c in calls):
            continue
        wrong = []
        for call in calls:
            args = arguments_of(call)
            if _is_write(call) and "reservation_id" in args:
                other = next(r for r in db.reservations if r != args["reservation_id"])
                call = _with(call, reservation_id=other)
            elif _is_write(call) and "user_id" in args:
                other = next(u for u in db.users if u != args["user_id"])
                call = _with(call, user_id=other)
            wrong.append(call)
        assert _reward(task, wrong, task.reference_dialogue).value < 1.0, task.id


def test_telling_the_wrong_status_scores_below_one(tasks: list[pb.Task]) -> None:
    informational = [t for t in tasks if not any(_is_write(c) for c in t.checker.gold_actions) and not _refusal(t)]
    assert informational
    for task in informational:
        messages = list(task.reference_dialogue)
        messages[-1] = pb.Message(role=pb.ROLE_ASSISTANT, content="I could not find anything about that flight.")
        assert _reward(task, task.checker.gold_actions, messages).value < 1.0, task.id


def test_assertions_hold_on_the_gold_state_and_name_known_functions(tasks: list[pb.Task]) -> None:
    for task in tasks:
        for assertion in task.checker.assertions:
            assert assertion.function in DOMAIN.assertions
            json.loads(assertion.arguments_json)
            json.loads(assertion.expected_json)


def test_another_seed_gives_grounded_discriminating_tasks() -> None:
    seed = 1
    tasks = sample_tasks(seed)
    assert {_goal(t) for t in tasks} == set(SAMPLERS)
    for task in tasks:
        assert _reward(task, task.checker.gold_actions, task.reference_dialogue, seed).value == 1.0, task.id
        assert _reward(task, [], [], seed).value < 1.0, task.id
