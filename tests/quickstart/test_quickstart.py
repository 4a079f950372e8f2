"""`eigenloop quickstart`: the whole loop end to end (--fast), its report against its own data, reproducible
synthesis, resume after an interruption, and bad input refused before anything runs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from eigenloop.checkers.diagnose import MISTAKE_KINDS
from eigenloop.checkers.evaluate import passed
from eigenloop.cli.main import app
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import read_jsonl, read_tasks
from eigenloop.quickstart.config import QuickstartConfig, read_config
from eigenloop.quickstart.pipeline import STAGE_NAMES
from eigenloop.quickstart.stages import finished_stages
from eigenloop.quickstart.synth import identifiers, synthesize

runner = CliRunner()


def said(result: Result) -> str:
    """The command's output as one line of words (rich wraps errors in a box at the terminal's width)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("quickstart") / "run"
    result = runner.invoke(app, ["quickstart", "--fast", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"report:{out / 'report.md'}" in "".join(said(result).split())  # rich may fold a long path
    yield out


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a guard for shared machines: about 2-3 minutes on 2 free cores
def test_fast_run_writes_every_stage_and_the_report(fast_run: Path) -> None:
    assert sorted(finished_stages(fast_run)) == sorted(STAGE_NAMES)
    assert read_config(fast_run / "config.yaml") == QuickstartConfig.preset(fast=True, seed=3, domain="toy")
    for path in ["report.md", "report.html", "report/sft_loss.png", "report/grpo_reward.png", "report/grpo_groups.png",
                 "synth/yield.png", "synth/failures.png", "sft/metrics.jsonl", "user_sft/metrics.jsonl",
                 "grpo/metrics.jsonl", "sft/model/model.safetensors", "grpo/model/model.safetensors"]:  # fmt: skip
        assert (fast_run / path).is_file(), path
    html = (fast_run / "report.html").read_text()
    assert "<table>" in html and 'src="report/grpo_reward.png"' in html


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a guard for shared machines: about 2-3 minutes on 2 free cores
def test_report_table_is_the_metrics_files(fast_run: Path) -> None:
    results = json.loads((fast_run / "eval" / "results.json").read_text())
    heldout = read_tasks(fast_run / "synth" / "heldout.jsonl")
    config = read_config(fast_run / "config.yaml")
    for name in ("sft", "grpo"):
        greedy = read_jsonl(fast_run / "eval" / name / "greedy.jsonl", pb.Trajectory)
        sampled = read_jsonl(fast_run / "eval" / name / "sampled.jsonl", pb.Trajectory)
        assert len(greedy) == len(heldout) and len(sampled) == len(heldout) * config.eval.samples
        r = results[name]
        assert r["greedy_pass1"] == round(100 * sum(map(passed, greedy)) / len(greedy), 2)
        assert r["sampled_pass1"] == round(100 * sum(map(passed, sampled)) / len(sampled), 2)
        by_task: dict[str, list[bool]] = {}
        for t in sampled:
            by_task.setdefault(t.task_id, []).append(passed(t))
        assert r["pass_hat_k"] == round(100 * sum(all(v) for v in by_task.values()) / len(by_task), 2)
        # every failed episode is counted once in the failure breakdown
        for episodes, counted in ((greedy, r["greedy_failures"]), (sampled, r["sampled_failures"])):
            scored = [t for t in episodes if t.status != pb.EPISODE_STATUS_INFRA_FAILED]
            assert sum(counted.values()) == sum(not passed(t) for t in scored)
        row = re.search(rf"^\| {name} \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", (fast_run / "report.md").read_text(), re.M)
        assert row is not None
        assert [float(c) for c in row.groups()] == [r["greedy_pass1"], r["sampled_pass1"], r["pass_hat_k"]]
    report = (fast_run / "report.md").read_text()
    for label, count in results["sft"]["sampled_failures"].items():
        row = re.search(rf"^\| {re.escape(label)} \| (\d+) \| (\d+) \| (\d+) \|", report, re.M)
        assert row is not None and int(row.group(3)) == count, label
    # the kinds of mistake sort the same episodes: each column adds up to its failures
    table = report[report.index("| kind of mistake |") :].split("\n\n")[0]
    kinds = re.findall(rf"^\| ({'|'.join(MISTAKE_KINDS)}) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", table, re.M)
    columns = [results[model][f"{mode}_failures"] for mode in ("greedy", "sampled") for model in ("sft", "grpo")]
    assert [sum(int(k[i + 1]) for k in kinds) for i in range(4)] == [sum(c.values()) for c in columns]
    # the most a perfect repair of the SFT model's wrong choices could add, from the same table
    choices = next(((int(k[1]), int(k[3])) for k in kinds if k[0] == "wrong choice"), (0, 0))
    room = re.search(r"would raise pass@1 by ([\d.]+) points greedy and ([\d.]+) sampled", report)
    assert (room is not None) == bool(results["sft"]["greedy_failures"])
    if room is not None:
        episodes = len(heldout), len(heldout) * config.eval.samples
        assert [float(x) for x in room.groups()] == [
            round(100 * c / n, 1) for c, n in zip(choices, episodes, strict=True)
        ]
    grpo_lines = (fast_run / "grpo" / "metrics.jsonl").read_text().splitlines()
    assert len(grpo_lines) == config.grpo.steps
    assert finished_stages(fast_run)["grpo"].summary["steps"] == config.grpo.steps


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a guard for shared machines: about 2-3 minutes on 2 free cores
def test_heldout_tasks_name_no_training_entity(fast_run: Path) -> None:
    train = read_tasks(fast_run / "synth" / "accepted.jsonl")
    heldout = read_tasks(fast_run / "synth" / "heldout.jsonl")
    seen = set().union(*(identifiers(t) for t in train))
    assert heldout and all(identifiers(t) and not identifiers(t) & seen for t in heldout)
    assert not {t.id for t in heldout} & {t.id for t in train}


def test_same_seed_same_synthesis_bytes(tmp_path: Path) -> None:
    config = QuickstartConfig.preset(fast=True, seed=5, domain="toy")
    for name in ("a", "b"):
        synthesize(config, tmp_path / name)
    for path in ["accepted.jsonl", "heldout.jsonl", "rejected.jsonl", "rounds/round-2/prompt_set.json"]:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes(), path
    other = QuickstartConfig.preset(fast=True, seed=6, domain="toy")
    synthesize(other, tmp_path / "c")
    assert (tmp_path / "c" / "accepted.jsonl").read_bytes() != (tmp_path / "a" / "accepted.jsonl").read_bytes()


def test_interrupted_run_resumes_after_its_last_finished_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import eigenloop.quickstart.model as model_stage
    import eigenloop.quickstart.train as train_stage

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "run"
    monkeypatch.setattr(model_stage, "build_model_and_tokenizer", interrupt)
    first = runner.invoke(app, ["quickstart", "--fast", "--out", str(out)])
    assert first.exit_code == 130
    assert "during model" in said(first) and "--resume" in said(first)
    assert list(finished_stages(out)) == ["synth"]
    accepted = (out / "synth" / "accepted.jsonl").stat()

    monkeypatch.undo()
    monkeypatch.setattr(train_stage, "train_sft", interrupt)
    second = runner.invoke(app, ["quickstart", "--fast", "--out", str(out), "--resume"])
    assert second.exit_code == 130, second.output
    assert "synth" in said(second) and "skipped" in said(second) and "during sft" in said(second)
    assert sorted(finished_stages(out)) == ["model", "synth"]
    assert (out / "synth" / "accepted.jsonl").stat().st_mtime_ns == accepted.st_mtime_ns  # not redone
    assert (out / "model" / "agent" / "model.safetensors").is_file()

    mismatch = runner.invoke(app, ["quickstart", "--out", str(out), "--resume"])
    assert mismatch.exit_code != 0 and "--fast" in said(mismatch)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--domain", "nowhere"], "nowhere"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**31)], "--seed"),
        (["--resume"], "no quickstart run to resume"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["quickstart", "--fast", "--out", str(out), *args])
    assert result.exit_code == 2
    assert message in said(result)
    assert not out.exists()


def test_an_existing_run_folder_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = runner.invoke(app, ["quickstart", "--fast", "--out", str(out)])
    assert result.exit_code == 2 and "--resume" in said(result)
    assert (out / "precious.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_sigterm_stops_the_run_and_its_services_like_ctrl_c(tmp_path: Path) -> None:
    """A real `eigenloop quickstart` process, sent SIGTERM once its synthesis services are up: it exits as after
    Ctrl-C (130, with the resume hint) and no service process outlives it (they used to be left orphaned)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from eigenloop.launcher import pid_alive, read_state

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "eigenloop.cli", "quickstart", "--fast", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    services = out / "synth" / "services"
    deadline = time.monotonic() + 120
    replicas = []
    while time.monotonic() < deadline and proc.poll() is None:
        replicas = read_state(services) if (services / "run.json").is_file() else []
        if len(replicas) == 3:
            break
        time.sleep(0.2)
    assert len(replicas) == 3, "the synthesis services never came up"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output and "--resume" in output
    assert not [r.service for r in replicas if pid_alive(r.pid)]
