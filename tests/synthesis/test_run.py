"""Synthesis runs: the output folder, byte-identical reruns, the ablation switches, and resuming.

Tried: the same configuration twice (same bytes in every file but timings.json), a run interrupted in its second
round and resumed (same output as the uninterrupted run, nothing half-written before), a second run into a used
folder without --resume, a resume with another configuration, --no-validate and --no-evolve.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import read_jsonl, read_tasks
from eigenloop.llm.procedural import ProceduralBackend
from eigenloop.synthesis.generator import TaskGenerator
from eigenloop.synthesis.pipeline import ValidationCore
from eigenloop.synthesis.prompts import default_prompt_set
from eigenloop.synthesis.run import RunFolderError, SynthesisConfig, complete_rounds, round_dir, run_synthesis

CONFIG = SynthesisConfig(domain="toy", rounds=3, per_round=8, seed=2, minibatch=4)


def _run(out: Path, config: SynthesisConfig = CONFIG, **kwargs: object) -> list[object]:
    generator = TaskGenerator(ProceduralBackend())
    return run_synthesis(  # type: ignore[arg-type]
        config, generator, ValidationCore(ProceduralBackend(), generator), out, default_prompt_set("toy"), **kwargs
    )


def _files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "timings.json"
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    _run(out)
    return out


def test_writes_the_dataset_rejections_prompt_sets_and_report(reference: Path) -> None:
    accepted = read_tasks(reference / "accepted.jsonl")
    rejected = read_jsonl(reference / "rejected.jsonl", pb.ValidationReport)
    assert len(accepted) + len(rejected) == 3 * 8
    assert all(r.verdicts and any(v.reason for v in r.verdicts if not v.passed) for r in rejected)
    for round_ in (1, 2, 3):
        folder = round_dir(reference, round_)
        assert json.loads((folder / "prompt_set.json").read_text())["agents"]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["generated"] == 8
    assert (round_dir(reference, 1) / "evolution.json").is_file()
    for name in ("report.md", "report.html", "yield.png", "failures.png", "diversity.png"):
        assert (reference / name).stat().st_size > 0
    assert "procedural" in (reference / "report.md").read_text()
    # JSON lines with one object per task: what `datasets.load_dataset("json", ...)` reads.
    assert all(isinstance(json.loads(line), dict) for line in (reference / "accepted.jsonl").read_text().splitlines())


def test_evolution_raises_the_yield(reference: Path) -> None:
    yields = [json.loads((round_dir(reference, r) / "summary.json").read_text()) for r in (1, 3)]
    assert yields[1]["accepted"] > yields[0]["accepted"]


def test_same_seed_same_bytes(reference: Path, tmp_path: Path) -> None:
    _run(tmp_path)
    assert _files(tmp_path) == _files(reference)


def test_interrupted_run_resumes_to_the_same_output(reference: Path, tmp_path: Path) -> None:
    def interrupt(round_: int, done: int, total: int) -> None:
        if round_ == 2 and done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, progress=interrupt)
    assert complete_rounds(tmp_path) == [1]
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(RunFolderError, match="--resume"):
        _run(tmp_path)
    with pytest.raises(RunFolderError, match="another configuration"):
        _run(tmp_path, SynthesisConfig(**{**CONFIG.model_dump(), "seed": 9}), resume=True)
    _run(tmp_path, resume=True)
    assert _files(tmp_path) == _files(reference)


def test_no_validate_accepts_every_executable_task_and_no_evolve_keeps_the_prompts(tmp_path: Path) -> None:
    config = SynthesisConfig(domain="toy", rounds=2, per_round=6, seed=2, evolve=False, validate_tasks=False)
    summaries = _run(tmp_path, config)
    assert [s.accepted for s in summaries] == [6, 6]  # type: ignore[attr-defined]
    versions = {json.loads((round_dir(tmp_path, r) / "prompt_set.json").read_text())["version"] for r in (1, 2)}
    assert versions == {default_prompt_set("toy").version}
