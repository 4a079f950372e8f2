"""`eigenloop domains ...` as a user runs it (in-process through typer's runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eigenloop.cli.main import app
from eigenloop.data import read_tasks

runner = CliRunner()
TAU2 = Path(__file__).resolve().parents[3] / "shared" / "tau2" / "data"
needs_tau2 = pytest.mark.skipif(not TAU2.is_dir(), reason=f"tau2 data not found at {TAU2}")


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_list_and_show() -> None:
    code, out = run("domains", "list")
    assert code == 0 and all(name in out for name in ["airline", "retail", "telecom", "toy"])
    code, out = run("domains", "show", "telecom")
    assert code == 0 and "toggle_airplane_mode" in out and "user" in out and "assert_service_status" in out
    code, out = run("domains", "show", "atlantis")
    assert code == 1 and "unknown domain 'atlantis'" in out


@pytest.mark.parametrize("name", ["toy", "retail"])
def test_check_reports_gold_pass_and_mutation_score(name: str) -> None:
    code, out = run("domains", "check", name, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["gold_pass_rate"] == 1.0 and report["mutation_score"] >= 0.9 and report["weak_checkers"] == []


@needs_tau2
def test_import_and_export_tau2(tmp_path: Path) -> None:
    code, out = run(
        "domains",
        "import-tau2",
        str(TAU2 / "retail"),
        "--domain",
        "retail",
        "--split",
        "train",
        "--out",
        str(tmp_path / "imported"),
    )
    assert code == 0, out
    summary = json.loads((tmp_path / "imported" / "import.json").read_text())
    assert summary["tasks"] == summary["gold_pass"] == 74
    assert summary["weak_checkers"] == ["10", "24", "25", "50", "57", "67", "105"]
    assert summary["with_unchecked_components"] > 0
    tasks = read_tasks(tmp_path / "imported" / "tasks.jsonl")
    assert len(tasks) == 74 and tasks[0].domain == "retail@tau2"
    code, out = run(
        "domains",
        "export-tau2",
        "--tasks",
        str(tmp_path / "imported" / "tasks.jsonl"),
        "--out",
        str(tmp_path / "exported"),
    )
    assert code == 0
    exported = json.loads((tmp_path / "exported" / "tasks.json").read_text())
    assert [t["id"] for t in exported] == [t.id for t in tasks]


def test_import_and_export_errors(tmp_path: Path) -> None:
    code, out = run("domains", "import-tau2", str(tmp_path / "nope"), "--domain", "airline")
    assert code == 1 and "no tau2 data" in out
    code, out = run("domains", "import-tau2", str(tmp_path), "--domain", "airline")
    assert code == 1 and "no policy file" in out
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n{"id": 5, "nope": 1}\n')
    code, out = run("domains", "export-tau2", "--tasks", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o"))
    assert code == 1 and "bad.jsonl:2" in out


def test_export_trajectories_in_tau2_layout(tmp_path: Path) -> None:
    from eigenloop.data import write_jsonl
    from eigenloop.domains import load_domain, sample_tasks
    from eigenloop.env.session import EnvSession
    from eigenloop.rollout.scripted import replay_reference
    from eigenloop.usersim import Conversation, make_policy

    task = sample_tasks("telecom")[0]
    conversation = Conversation(make_policy("procedural"), task)
    conversation.open()
    episode = replay_reference(task, EnvSession(load_domain("telecom"), task=task), conversation)
    write_jsonl(tmp_path / "trajectories.jsonl", [episode.trajectory(task)])
    code, out = run(
        "domains",
        "export-tau2",
        "--trajectories",
        str(tmp_path / "trajectories.jsonl"),
        "--out",
        str(tmp_path / "tau2"),
    )
    assert code == 0, out
    (simulation,) = json.loads((tmp_path / "tau2" / "results.json").read_text())["simulations"]
    assert simulation["task_id"] == task.id and simulation["termination_reason"] == "user_stop"
    assert simulation["reward_info"]["reward"] == 1.0 and simulation["reward_info"]["reward_basis"]
    roles = {m["role"] for m in simulation["messages"]}
    assert roles == {"assistant", "user", "tool"}
    user_calls = [c for m in simulation["messages"] if m["role"] == "user" for c in m["tool_calls"] or []]
    assert user_calls and all(c["requestor"] == "user" for c in user_calls)
    answered = {m["id"]: m["requestor"] for m in simulation["messages"] if m["role"] == "tool"}
    assert all(answered[c["id"]] == "user" for c in user_calls)
    assert run("domains", "export-tau2", "--out", str(tmp_path))[0] == 1


def test_an_error_line_keeps_a_long_path_whole_and_its_brackets(tmp_path: Path) -> None:
    """Rich wraps output at the terminal's width (80 columns in a pipe) and reads `[...]` as markup: an error naming
    a long path came out broken over two lines, and `eigenloop[local]` lost its `[local]`."""
    missing = tmp_path / ("a-long-folder-name-" * 4) / "tasks[v2].jsonl"
    result = CliRunner().invoke(app, ["domains", "export-tau2", "--tasks", str(missing), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert f"error: {missing}: no such file\n" in result.output
