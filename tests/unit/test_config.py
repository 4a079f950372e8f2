from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from eigenloop.config import ConfigError, load_config
from eigenloop_toolenv.server import ToolEnvConfig


def test_flags_beat_environment_beat_yaml_beat_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yaml_file = tmp_path / "toolenv.yaml"
    yaml_file.write_text("port: 1111\nworkers: 3\ngrace-period-s: 7\nmax_calls_per_session: 9\n")
    monkeypatch.setenv("EIGENLOOP_TOOLENV_WORKERS", "5")
    monkeypatch.setenv("EIGENLOOP_TOOLENV_GRACE_PERIOD_S", "8")
    config = load_config(ToolEnvConfig, ["--config", str(yaml_file), "--grace-period-s", "9"])
    assert config.port == 1111  # YAML only
    assert config.max_calls_per_session == 9  # YAML only
    assert config.workers == 5  # env beats YAML
    assert config.grace_period_s == 9  # flag beats env and YAML
    assert config.max_message_bytes == 4 * 1024 * 1024  # default


def test_list_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIGENLOOP_TOOLENV_DOMAINS", '["toy"]')
    assert load_config(ToolEnvConfig, []).domains == ["toy"]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("port: [1, 2]\n", ValidationError),
        ("unknown_key: 1\n", ValidationError),
        ("- a\n- b\n", ConfigError),
        ("port: : :\n", ConfigError),
    ],
)
def test_bad_yaml_is_reported(tmp_path: Path, text: str, error: type[Exception]) -> None:
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text(text)
    with pytest.raises(error):
        load_config(ToolEnvConfig, ["--config", str(yaml_file)])


def test_missing_yaml_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"config file not found: /nope\.yaml"):
        load_config(ToolEnvConfig, ["--config", "/nope.yaml"])


def test_auth_token_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIGENLOOP_TOOLENV_AUTH_TOKEN", "hunter2")
    config = load_config(ToolEnvConfig, [])
    assert "hunter2" not in repr(config)
    assert config.auth_token is not None and config.auth_token.get_secret_value() == "hunter2"
