"""`eigenloop synth`: a small embedded run, resume, and the errors a person sees for bad input.

Tried: an unknown domain, a --prompt-set file that is not JSON and one for another domain, a second run into the
same --out without --resume.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from eigenloop.cli.main import app
from eigenloop.data import to_record
from tests.synthesis.helpers import evolved

runner = CliRunner()


def _said(output: str) -> str:
    """The output as one line: rich wraps long messages at the terminal width."""
    return " ".join(output.split())


SMALL = ["synth", "--domain", "toy", "--rounds", "2", "--per-round", "4", "--minibatch", "4", "--embedded"]


def test_small_run_then_resume(tmp_path: Path) -> None:
    result = runner.invoke(app, [*SMALL, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "embedded, procedural backend" in result.output
    assert (tmp_path / "accepted.jsonl").is_file() and (tmp_path / "report.md").is_file()
    _loads_with_datasets(tmp_path / "accepted.jsonl", tmp_path / "hf-cache")
    again = runner.invoke(app, [*SMALL, "--out", str(tmp_path)])
    assert again.exit_code == 2 and "--resume" in _said(again.output)
    resumed = runner.invoke(app, [*SMALL, "--out", str(tmp_path), "--resume"])
    assert resumed.exit_code == 0, resumed.output


def _loads_with_datasets(path: Path, cache: Path) -> None:
    """The accepted tasks open with Hugging Face `datasets` (one row per task, the same ids)."""
    import datasets

    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    table = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))
    assert table.num_rows == len(ids) > 0 and table["id"] == ids


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    unknown = runner.invoke(app, ["synth", "--domain", "atlantis", "--out", str(tmp_path)])
    assert unknown.exit_code == 2 and "unknown domain 'atlantis'" in _said(unknown.output)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    bad = runner.invoke(app, [*SMALL, "--out", str(tmp_path / "a"), "--prompt-set", str(garbage)])
    assert bad.exit_code == 2 and "not a PromptSet JSON file" in _said(bad.output)
    other = tmp_path / "airline.json"
    other.write_text(json.dumps(to_record(evolved("airline"))))
    wrong = runner.invoke(app, [*SMALL, "--out", str(tmp_path / "b"), "--prompt-set", str(other)])
    assert wrong.exit_code == 2 and "for domain 'airline'" in _said(wrong.output)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
