"""benchmarks/ablations.py's bookkeeping: rows cached once, resuming a folder whose later stages are done, and
the paper's directions computed from the rows (the training itself is what the benchmark runs, not the tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import ablations
from eigenloop.quickstart.config import QuickstartConfig
from eigenloop.quickstart.stages import Stage


def test_a_row_is_computed_once_then_read_back(tmp_path: Path) -> None:
    calls: list[Path] = []

    def row(config: QuickstartConfig, base: Path, out: Path) -> dict[str, Any]:
        calls.append(out)
        return {"greedy_pass1": 50.0, "sampled_pass1": 40.0}

    config = QuickstartConfig(seed=3)
    first = ablations._cached(row, config, tmp_path / "base", tmp_path / "row")
    again = ablations._cached(row, config, tmp_path / "base", tmp_path / "row")
    assert first == again and first["greedy_pass1"] == 50.0 and first["seconds"] >= 0
    assert calls == [tmp_path / "row"]
    assert json.loads((tmp_path / "row" / "row.json").read_text()) == first


def test_resuming_a_folder_whose_later_stages_are_done_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data row asks for synthesis first; in a folder where SFT has finished too, that must neither fail (the
    stage record names stages past `synth`) nor run any stage again."""
    done = {name: {"seconds": 1.0, "summary": {}} for name in ("synth", "model", "sft")}
    (tmp_path / "stages.json").write_text(json.dumps(done))
    ran: list[str] = []
    real = ablations.build_stages

    def recording(*args: Any, **kwargs: Any) -> list[Stage]:
        def run(name: str) -> dict[str, Any]:
            ran.append(name)
            return {}

        return [Stage(s.name, s.title, lambda folder, name=s.name: run(name)) for s in real(*args, **kwargs)]

    monkeypatch.setattr(ablations, "build_stages", recording)
    ablations._run_through(QuickstartConfig(seed=0), tmp_path, "synth")
    ablations._run_through(QuickstartConfig(seed=0), tmp_path, "sft")
    assert ran == []
    ablations._run_through(QuickstartConfig(seed=0), tmp_path, "user_sft")
    assert ran == ["user_sft"]


def test_directions_are_mean_differences_over_the_seeds_both_rows_have() -> None:
    rows = {
        "data: full": {
            0: {"greedy_pass1": 60.0, "sampled_pass1": 50.0},
            1: {"greedy_pass1": 0.0, "sampled_pass1": 0.0},
        },
        "data: no_evolve": {0: {"greedy_pass1": None, "sampled_pass1": None}, 1: {"greedy_pass1": None}},
        "data: no_validate": {1: {"greedy_pass1": 10.0, "sampled_pass1": 4.0}},
        ablations.DEFAULT_GRPO: {0: {"greedy_pass1": 55.0, "sampled_pass1": 52.0}},
    }
    found = ablations.directions(rows)
    # No SFT model (nothing accepted) scores 0.
    assert found["evolution raises SFT pass@1"]["difference_points"] == {"greedy_pass1": 30.0, "sampled_pass1": 25.0}
    assert found["validation raises SFT pass@1"] == {
        "favoured": "data: full",
        "other": "data: no_validate",
        "seeds": [1],
        "difference_points": {"greedy_pass1": -10.0, "sampled_pass1": -4.0},
    }
    assert found["GRPO raises pass@1 over SFT"]["difference_points"] == {"greedy_pass1": -5.0, "sampled_pass1": 2.0}
    assert "diversity filtering raises SFT pass@1" not in found  # no row at any seed


def test_the_longer_sft_row_gets_the_steps_grpo_took_and_starts_from_the_base_data(tmp_path: Path) -> None:
    base, out = tmp_path / "base", tmp_path / "row"
    stages = ("synth", "model", "sft", "user_sft", "grpo")
    seconds = {"synth": 50.0, "model": 20.0, "sft": 300.0, "user_sft": 100.0, "grpo": 225.0}
    for stage in stages:
        (base / stage).mkdir(parents=True)
        (base / stage / "made.txt").write_text(stage)
    (base / "stages.json").write_text(json.dumps({s: {"seconds": seconds[s], "summary": {}} for s in stages}))
    # 300 steps took 300 s, so GRPO's 225 s buy 225 more
    assert ablations.matched_sft_steps(QuickstartConfig(seed=0), base) == 525

    ablations._start_from(base, out, "model")
    assert sorted(p.name for p in out.iterdir()) == ["model", "stages.json", "synth"]
    assert sorted(json.loads((out / "stages.json").read_text())) == ["model", "synth"]
    (out / "sft").mkdir()
    (out / "stages.json").write_text(json.dumps({s: {"seconds": 1.0, "summary": {}} for s in stages[:3]}))
    ablations._start_from(base, out, "model")  # a row that got further keeps its work
    assert (out / "sft").is_dir()
