from __future__ import annotations

from pathlib import Path

import pytest

from eigenloop.training.config import ConfigError, GRPOConfig, SFTConfig, load_config, parse_config
from eigenloop.training.run import TrainingError
from eigenloop.training.sft import run_sft
from tests.training.helpers import sft_config, write_config


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", {**sft_config(tmp_path), "optim": {"learning_rate": 1e-3}})
    with pytest.raises(ConfigError, match=r"optim\.learning_rate: unknown key"):
        load_config("sft", path)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"steps: .*integer.*'many'"):
        parse_config(SFTConfig, {**sft_config(tmp_path), "steps": "many"})


def test_model_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"exactly one of model\.path"):
        parse_config(SFTConfig, {**sft_config(tmp_path), "model": {}})


def test_file_rollouts_need_a_path(tmp_path: Path) -> None:
    raw = {"run_dir": str(tmp_path), "model": {"path": "x"}, "rollouts": {"source": "file"}}
    with pytest.raises(ConfigError, match=r"needs rollouts\.path"):
        parse_config(GRPOConfig, raw)


def test_grpo_defaults_follow_the_recipe(tmp_path: Path) -> None:
    config = parse_config(GRPOConfig, {"run_dir": str(tmp_path), "model": {"path": "x"}})
    assert (config.reward.scale, config.reward.bias) == (10.0, -0.5)
    assert config.loss.clip_eps == 0.4 and config.loss.kl_coef == 0.0
    assert config.filter.zero_variance and config.filter.infra_failed and config.filter.simulator_invalid


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    raw = sft_config(tmp_path)
    raw["data"]["tasks"] = ["tasks.jsonl"]
    raw["run_dir"] = "run"
    config = load_config("sft", write_config(tmp_path / "c.yaml", raw))
    assert config.data.tasks == [tmp_path / "tasks.jsonl"]
    assert config.run_dir == tmp_path / "run"


def test_missing_model_directory_fails_before_training(tmp_path: Path) -> None:
    config = parse_config(SFTConfig, {**sft_config(tmp_path), "model": {"path": str(tmp_path / "nope")}})
    with pytest.raises(TrainingError, match="no such directory"):
        run_sft(config)
