"""`eigenloop up / status / down` and `eigenloop env ...`, run as a user would, against real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eigenloop import launcher


def eigenloop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eigenloop.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_up_status_down_round_trip(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    started = eigenloop("up", "--run-dir", run_dir, "--replicas", "toolenv=2")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        everything = json.loads((tmp_path / "run" / "run.json").read_text())["replicas"]
        # Every installed service that needs no settings; inference needs a model, so it is skipped.
        expected = sorted([*(set(launcher.installed_services()) - {"inference"}), "toolenv"])
        assert sorted(r["service"] for r in everything) == expected
        assert {"toolenv", "user_sim", "generator", "validator", "trainer"} <= set(expected)
        assert started.stdout.count("SERVING") == len(expected)
        assert "skipped inference: set EIGENLOOP_INFERENCE_MODEL" in started.stdout
        state = [r for r in everything if r["service"] == "toolenv"]
        again = eigenloop("up", "--run-dir", run_dir)
        assert again.returncode == 1 and "already running" in again.stdout

        status = eigenloop("status", "--run-dir", run_dir)
        assert status.returncode == 0 and status.stdout.count("SERVING") == len(expected)

        address = ",".join(f"127.0.0.1:{r['port']}" for r in state)
        env = {launcher.address_env_var("toolenv"): address}
        episode = eigenloop("env", "episode", env=env)
        assert episode.returncode == 0, episode.stdout + episode.stderr
        assert "toy-refuse-shipped" in episode.stdout and "state=1, action=1, communicate=1" in episode.stdout
        called = eigenloop("env", "call-tool", "get_order", "--args", '{"order_id": "O10001"}', "--address", address)
        assert called.returncode == 0 and '"status": "pending"' in called.stdout
        bad = eigenloop("env", "call-tool", "get_order", "--args", '{"order_id": 1}', "--address", address)
        assert bad.returncode == 2 and "INVALID_ARGUMENTS" in bad.stdout
        user_sim = next(f"127.0.0.1:{r['port']}" for r in everything if r["service"] == "user_sim")
        episode_env = {**env, launcher.address_env_var("user_sim"): user_sim}
        replayed = eigenloop("user-sim", "replay", "--domain", "telecom", env=episode_env)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "reward 1" in replayed.stdout and "user stop: goal_met" in replayed.stdout
        assert "toggle_airplane_mode" in replayed.stdout  # the user acted on their own phone
        described = eigenloop("env", "describe", "toy", "--address", address)
        assert "cancel_order" in described.stdout and "read_emails" in described.stdout
        unknown = eigenloop("env", "describe", "atlantis", "--address", address)
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stdout

        pids = [r["pid"] for r in state]
        os.kill(pids[1], 9)  # a replica dies behind the launcher's back
        degraded = eigenloop("status", "--run-dir", run_dir)
        assert degraded.returncode == 1 and "EXITED" in degraded.stdout
    finally:
        stopped = eigenloop("down", "--run-dir", run_dir)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not any(launcher.pid_alive(p) for p in pids)
    assert eigenloop("status", "--run-dir", run_dir).returncode == 1
    assert "drain_s" in (tmp_path / "run" / "logs" / "toolenv-0.log").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--only", "warp_drive"], "unknown service(s) warp_drive"),
        (["up", "--only", "inference"], "inference needs EIGENLOOP_INFERENCE_MODEL set"),
        (["up", "--replicas", "toolenv"], "use NAME=COUNT"),
        (["up", "--replicas", "toolenv=0"], "use NAME=COUNT"),
    ],
)
def test_up_rejects_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = eigenloop(*args, "--run-dir", str(tmp_path))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_env_commands_without_a_running_toolenv(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eigenloop.cli", "env", "domains"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if "ADDRESSES" not in k},
    )
    assert result.returncode == 1 and "no toolenv running" in result.stdout


def test_a_service_that_cannot_start_is_reported(tmp_path: Path) -> None:
    result = eigenloop("up", "--run-dir", str(tmp_path), env={"EIGENLOOP_TOOLENV_DOMAINS": '["atlantis"]'})
    assert result.returncode == 1
    assert "exited during start-up" in result.stdout and "atlantis" in result.stdout
    assert not (tmp_path / "run.json").exists()
