"""The stage runner: order, resume after an interruption, and refusing to overwrite a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eigenloop.quickstart.stages import Stage, StageError, finished_stages, run_stages


def _stages(calls: list[str], fail_at: str | None = None) -> list[Stage]:
    def make(name: str) -> Stage:
        def run(folder: Path) -> dict[str, object]:
            calls.append(name)
            if name == fail_at:
                raise KeyboardInterrupt
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "out.txt").write_text(name)
            return {"name": name}

        return Stage(name, name.upper(), run)

    return [make(n) for n in ("synth", "sft", "grpo")]


def test_stages_run_in_order_and_are_recorded(tmp_path: Path) -> None:
    calls: list[str] = []
    records = run_stages(_stages(calls), tmp_path, resume=False)
    assert calls == ["synth", "sft", "grpo"]
    assert list(records) == calls
    assert finished_stages(tmp_path)["sft"].summary == {"name": "sft"}


def test_an_interrupted_run_resumes_at_the_unfinished_stage(tmp_path: Path) -> None:
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_stages(_stages(calls, fail_at="sft"), tmp_path, resume=False)
    assert list(finished_stages(tmp_path)) == ["synth"]
    calls.clear()
    skipped: list[str] = []
    run_stages(_stages(calls), tmp_path, resume=True, on_start=lambda s, done: skipped.append(s.name) if done else None)
    assert calls == ["sft", "grpo"]
    assert skipped == ["synth"]


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    run_stages(_stages([]), tmp_path, resume=False)
    with pytest.raises(StageError, match="--resume"):
        run_stages(_stages([]), tmp_path, resume=False)


@pytest.mark.parametrize("content", ["{not json", '{"synth": {"seconds": 1}}', '["synth"]'])
def test_a_corrupt_record_is_reported(tmp_path: Path, content: str) -> None:
    (tmp_path / "stages.json").write_text(content)
    with pytest.raises(StageError, match="not a stage record"):
        run_stages(_stages([]), tmp_path, resume=True)


def test_a_record_of_another_pipeline_is_refused(tmp_path: Path) -> None:
    (tmp_path / "stages.json").write_text(json.dumps({"other": {"seconds": 1, "summary": {}}}))
    with pytest.raises(StageError, match="does not have"):
        run_stages(_stages([]), tmp_path, resume=True)


def test_agent_sft_starts_from_the_built_model_and_user_sft_from_the_agents_sft_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eigenloop.quickstart.train as train_stage
    from eigenloop.quickstart.config import QuickstartConfig
    from eigenloop.quickstart.pipeline import Paths, build_stages

    started_from: dict[bool, Path] = {}

    def record(config: QuickstartConfig, *, user: bool, model: Path, **kwargs: object) -> dict[str, object]:
        started_from[user] = model
        return {}

    monkeypatch.setattr(train_stage, "train_sft", record)
    stages = {s.name: s for s in build_stages(QuickstartConfig(fast=True), tmp_path, lambda *args: None)}
    stages["sft"].run(tmp_path / "sft")
    stages["user_sft"].run(tmp_path / "user_sft")
    paths = Paths(tmp_path)
    assert started_from == {False: paths.init_model, True: paths.sft_model}
