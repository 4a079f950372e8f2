"""pass@1 / pass^k scoring and `eigenloop eval`.

Tried: hand-made groups (a task solved 2 of 4 times: pass@1 0.5, pass^2 1/6, pass^4 0; infra-failed and
simulator-invalid samples left out, a task with too few scored samples counted short; per-domain and overall;
failed scored samples counted by how they failed and by kind of mistake, each by its own domain's schemas);
k < 1; `eigenloop eval` with the tiny model in process (table, eval.json, trajectories.jsonl readable back as
Trajectory records with tokens and masks, tau2 simulations), and a tasks file that does not exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eigenloop.cli.main import app
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import read_jsonl, write_jsonl
from eigenloop.domains import sample_tasks
from eigenloop.protocol import assistant_calls, tool_call, tool_message
from eigenloop.rollout.evaluation import score_groups
from eigenloop.rollout.manager import Group

OK, TRUNC, INFRA, INVALID = (
    pb.EPISODE_STATUS_COMPLETED,
    pb.EPISODE_STATUS_TRUNCATED,
    pb.EPISODE_STATUS_INFRA_FAILED,
    pb.EPISODE_STATUS_SIMULATOR_INVALID,
)


def group(domain: str, task_id: str, samples: list[tuple[int, float]]) -> Group:
    task = pb.Task(id=task_id, domain=domain)
    trajectories = []
    for i, (status, reward) in enumerate(samples):
        t = pb.Trajectory(task_id=task_id, domain=domain, status=status, sample_index=i)
        if status != INFRA:
            t.reward.value = reward
        trajectories.append(t)
    return Group(task, f"{task_id}#0", trajectories)


def test_pass_at_1_and_pass_hat_k() -> None:
    groups = [
        group("retail", "a", [(OK, 1), (OK, 0), (TRUNC, 1), (OK, 0)]),  # 2 of 4
        group("retail", "b", [(OK, 1), (OK, 1), (OK, 1), (OK, 1)]),  # 4 of 4
        group("airline", "c", [(OK, 1), (INFRA, 0), (INVALID, 0), (OK, 1)]),  # 2 of 2 scored: short for k=4
    ]
    report = score_groups(groups, 2)
    retail = next(d for d in report.domains if d.domain == "retail")
    assert retail.pass_at_1 == pytest.approx((0.5 + 1.0) / 2)
    assert retail.pass_hat_k == pytest.approx((1 / 6 + 1.0) / 2)  # C(2,2)/C(4,2) = 1/6
    airline = next(d for d in report.domains if d.domain == "airline")
    assert (airline.pass_at_1, airline.pass_hat_k, airline.infra_failed, airline.simulator_invalid) == (1, 1, 1, 1)
    assert report.overall.tasks == 3 and report.overall.episodes == 12
    # failures counted over scored samples only: retail's two, not airline's simulator-invalid one
    assert retail.failures == {"other: no reward": 2} and airline.failures == {}
    assert retail.mistakes == report.overall.mistakes == {"other": 2} and airline.mistakes == {}

    four = score_groups(groups, 4)
    assert next(d for d in four.domains if d.domain == "retail").pass_hat_k == pytest.approx(0.5)
    assert next(d for d in four.domains if d.domain == "airline").short_tasks == 1
    assert next(d for d in four.domains if d.domain == "airline").pass_hat_k is None


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        score_groups([], 0)


def test_eval_command_in_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    write_jsonl(tasks, sample_tasks("toy")[:2])
    out = tmp_path / "eval"
    args = ["eval", "--model", str(tiny_model_dir), "--tasks", str(tasks), "-k", "2", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--max-turns", "2", "--max-new-tokens", "8", "--temperature", "1"])
    assert result.exit_code == 0, result.output
    assert "pass^2" in result.output and "toy" in result.output
    report = json.loads((out / "eval.json").read_text())
    assert report["k"] == 2 and report["overall"]["tasks"] == 2 and report["overall"]["episodes"] == 4
    trajectories = read_jsonl(out / "trajectories.jsonl", pb.Trajectory)
    assert len(trajectories) == 4
    for t in trajectories:
        assert t.tokens.token_ids and len(t.tokens.policy_mask) == len(t.tokens.token_ids)
        assert t.reward.breakdown
    failed = sum(t.reward.value < 1 for t in trajectories if t.status in (OK, TRUNC))  # the scored ones
    assert sum(report["overall"]["failures"].values()) == sum(report["overall"]["mistakes"].values()) == failed
    assert failed == 0 or ("how episodes failed" in result.output and "kinds of mistake" in result.output)
    simulations = json.loads((out / "tau2_simulations.json").read_text())["simulations"]
    assert {s["task_id"] for s in simulations} == {t.id for t in sample_tasks("toy")[:2]}


def test_eval_command_reports_a_missing_tasks_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--tasks", str(tmp_path / "no.jsonl")])
    assert result.exit_code == 1
    assert "no such file" in result.output


def test_failed_episodes_are_counted_by_kind_of_mistake() -> None:
    """A wrong reason is a wrong choice (toy's reason is an enum), a wrong address a wrong value."""
    toy = {t.id: t for t in sample_tasks("toy")}
    cancel, move = toy["toy-cancel-pending"], toy["toy-update-address"]

    def failed(task: pb.Task, call: str, arguments: dict[str, str]) -> Group:
        """One episode making the task's gold calls, `call` with `arguments` instead."""
        calls = [c for c in task.checker.gold_actions if c.name != call] + [tool_call(call, arguments)]
        messages = []
        for c in calls:
            made = tool_call(c.name, json.loads(c.arguments_json), call_id="call_0")
            messages += [assistant_calls(made), tool_message(pb.ToolResult(call_id="call_0"))]
        trajectory = pb.Trajectory(task_id=task.id, domain="toy", status=OK, messages=messages)
        return Group(task, f"{task.id}#0", [trajectory])

    order = json.loads(cancel.checker.gold_actions[-1].arguments_json)["order_id"]
    user = json.loads(move.checker.gold_actions[-1].arguments_json)["user_id"]
    groups = [
        failed(cancel, "cancel_order", {"order_id": order, "reason": "found_cheaper"}),
        failed(move, "update_address", {"user_id": user, "address": "1 Nowhere Lane"}),
    ]
    report = score_groups(groups, 1)
    assert report.overall.failures == {"cancel_order: wrong reason": 1, "update_address: wrong address": 1}
    assert report.overall.mistakes == {"wrong value": 1, "wrong choice": 1}
