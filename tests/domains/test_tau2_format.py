"""tau2-bench's data layout: every train task's gold actions replay to reward 1.0 under eigenloop's checkers,
do-nothing trajectories score what tau2's rules give, and malformed files are named precisely.

Reads ../shared/tau2/data (never copied into the project); skips with a message where it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eigenloop import tau2
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import TAU2_VARIABLE, UnknownDomainError, load_domain
from eigenloop.env.session import EnvSession

DATA = Path(__file__).resolve().parents[3] / "shared" / "tau2" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"tau2 data not found at {DATA}")

# Train tasks a do-nothing agent passes under tau2's rules (TOOLS.md §3: their gold makes no successful write
# and they need no communicated string; retail's NL assertions are unjudged here).
DO_NOTHING_PASSES = {
    "airline": {"0", "1", "4", "5", "9", "10", "27", "28", "34", "36", "38", "41", "43", "46", "47", "49"},
    "retail": {"10", "24", "25", "50", "57", "67", "105"},
    "telecom": set(),
}


@pytest.fixture(autouse=True)
def tau2_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TAU2_VARIABLE, str(DATA))
    load_domain.cache_clear()


def _tasks(domain: str) -> list[pb.Task]:
    return tau2.load_tasks(DATA / domain / "tasks.json", domain, split="train")


def _gold_messages(task: pb.Task) -> list[pb.Message]:
    return [pb.Message(role=pb.ROLE_ASSISTANT, content=" ".join(task.checker.communicate_info))]


@pytest.mark.parametrize("domain", ["airline", "retail", "telecom"])
def test_every_train_task_replays_to_one_and_do_nothing_scores_as_tau2(domain: str) -> None:
    env = load_domain(f"{domain}@tau2")
    passes_empty = set()
    for task in _tasks(domain):
        session = EnvSession(env, task=task)
        for call in task.checker.gold_actions:
            session.call(call)
        reward = session.evaluate(_gold_messages(task))
        assert reward.value == 1.0, (task.id, reward.failure_reason)
        assert not reward.checker_error
        if task.checker.nl_assertions and pb.REWARD_COMPONENT_NL_ASSERTION in task.checker.reward_basis:
            assert list(reward.unchecked) == [pb.REWARD_COMPONENT_NL_ASSERTION]  # reported, never passed
        if EnvSession(env, task=task).evaluate([]).value == 1.0:
            passes_empty.add(task.id)
    assert passes_empty == DO_NOTHING_PASSES[domain]


def test_a_wrong_write_fails_the_state_check() -> None:
    env = load_domain("airline@tau2")
    task = next(t for t in _tasks("airline") if any(c.name == "cancel_reservation" for c in t.checker.gold_actions))
    session = EnvSession(env, task=task)
    for call in task.checker.gold_actions:
        if call.name != "cancel_reservation":
            session.call(call)
    reward = session.evaluate(_gold_messages(task))
    assert reward.value == 0.0
    assert "reservations" in reward.state_diff


@pytest.mark.parametrize("domain", ["airline", "retail", "telecom"])
def test_export_then_import_gives_the_same_tasks(tmp_path: Path, domain: str) -> None:
    tasks = _tasks(domain)
    out = tmp_path / domain / "tasks.json"
    tau2.write_tasks(tasks, out)
    again = tau2.load_tasks(out, domain)
    assert [t.SerializeToString(deterministic=True) for t in again] == [
        t.SerializeToString(deterministic=True) for t in tasks
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.update(surprise=1), "task {id}: field surprise: Extra inputs are not permitted"),
        (
            lambda t: t["evaluation_criteria"].update(reward_basis=["VIBES"]),
            "task {id}: field evaluation_criteria.reward_basis.0",
        ),
        (
            lambda t: t["user_scenario"]["instructions"].pop("reason_for_call"),
            "task {id}: field user_scenario.instructions.reason_for_call: Field required",
        ),
        (lambda t: t["user_scenario"]["instructions"].update(domain="retail"), "expected 'airline'"),
    ],
)
def test_malformed_tasks_name_file_task_and_field(tmp_path: Path, edit: object, message: str) -> None:
    items = json.loads((DATA / "airline" / "tasks.json").read_text())
    edit(items[3])  # type: ignore[operator]
    bad = tmp_path / "tasks.json"
    bad.write_text(json.dumps(items))
    with pytest.raises(tau2.Tau2FormatError) as err:
        tau2.load_tasks(bad, "airline")
    assert str(bad) in str(err.value)
    assert message.format(id=items[3]["id"]) in str(err.value)


def test_unreadable_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(tau2.Tau2FormatError, match="no such file"):
        tau2.load_tasks(tmp_path / "missing.json", "airline")
    (tmp_path / "tasks.json").write_text("{not json")
    with pytest.raises(tau2.Tau2FormatError, match="not JSON"):
        tau2.load_tasks(tmp_path / "tasks.json", "airline")


def test_tau2_domains_need_the_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TAU2_VARIABLE)
    load_domain.cache_clear()
    with pytest.raises(UnknownDomainError, match=TAU2_VARIABLE):
        load_domain("airline@tau2")
    with pytest.raises(UnknownDomainError, match="unknown state source"):
        load_domain("airline@elsewhere")
