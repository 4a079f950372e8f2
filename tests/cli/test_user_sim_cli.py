"""`eigenloop user-sim export-sft`: user turns become targets, the agent's tool calls stay invisible."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from eigenloop.cli.main import app
from eigenloop.data import write_jsonl
from eigenloop.domains import sample_tasks
from eigenloop.usersim.validity import STOP_TOKEN

runner = CliRunner()


def test_export_sft_from_a_dataset_folder(tmp_path: Path) -> None:
    tasks = sample_tasks("telecom")[:3] + sample_tasks("toy")[:1]  # toy tasks have no reference dialogue
    write_jsonl(tmp_path / "accepted.jsonl", tasks)
    result = runner.invoke(app, ["user-sim", "export-sft", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "skipped 1" in result.output
    examples = [json.loads(line) for line in (tmp_path / "user_sft.jsonl").read_text().splitlines()]
    assert [e["task_id"] for e in examples] == [t.id for t in tasks[:3]]
    for example, task in zip(examples, tasks, strict=False):
        roles = [m["role"] for m in example["messages"]]
        assert roles[0] == "system" and task.user.instruction in example["messages"][0]["content"]
        targets = [m for m in example["messages"] if m["role"] == "assistant"]
        assert targets and STOP_TOKEN in targets[-1]["content"]
        called = {c["function"]["name"] for m in targets for c in m.get("tool_calls", [])}
        assert called and called <= {t["function"]["name"] for t in example["tools"]}  # only the user's tools
        agent_tools = {c.name for m in task.reference_dialogue if m.role == 3 for c in m.tool_calls}
        assert not called & agent_tools


def test_export_sft_bad_input(tmp_path: Path) -> None:
    assert runner.invoke(app, ["user-sim", "export-sft"]).exit_code == 2
    missing = runner.invoke(app, ["user-sim", "export-sft", "--data", str(tmp_path)])
    assert missing.exit_code == 1 and "no accepted.jsonl" in " ".join(missing.output.split())
    write_jsonl(tmp_path / "tasks.jsonl", sample_tasks("toy"))
    empty = runner.invoke(app, ["user-sim", "export-sft", "--data", str(tmp_path)])
    assert empty.exit_code == 1 and "reference dialogue" in " ".join(empty.output.split())
