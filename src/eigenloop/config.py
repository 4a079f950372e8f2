"""Service configuration: one pydantic model per service, read from flags > environment > YAML > defaults."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

C = TypeVar("C", bound="ServiceConfig")


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the file and the key."""


class ServiceConfig(BaseSettings):
    """What every service's server needs. Services subclass it and set env_prefix (EIGENLOOP_<NAME>_)."""

    model_config = SettingsConfigDict(extra="forbid", cli_kebab_case=True, env_prefix="EIGENLOOP_")

    host: str = Field("127.0.0.1", description="address the gRPC server binds")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free one")
    workers: int = Field(256, ge=1, description="threads serving RPCs; each open stream holds one")
    max_concurrent_rpcs: int | None = Field(
        None, ge=1, description="beyond this, RPCs fail with RESOURCE_EXHAUSTED at once; default: workers"
    )
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest message sent or received")
    grace_period_s: float = Field(10.0, ge=0, description="on SIGTERM, how long open streams may finish")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(True, description="JSON lines on stderr; false for human-readable lines")
    auth_token: SecretStr | None = Field(
        None, description="when set, every RPC must send 'authorization: Bearer <token>'"
    )
    tls_cert: Path | None = Field(None, description="server certificate (PEM); enables TLS")
    tls_key: Path | None = None
    tls_client_ca: Path | None = Field(None, description="require client certificates signed by this CA (mTLS)")
    tls_ca: Path | None = Field(
        None, description="CA of the services this one calls; set, its channels use TLS and present tls_cert/tls_key"
    )
    metrics_host: str = Field("", description="address /metrics binds (e.g. a separate interface); empty: host")
    max_streams_per_client: int | None = Field(
        None, ge=1, description="open streams one client address may hold; beyond: RESOURCE_EXHAUSTED; default: no cap"
    )
    replica_id: str = Field("", description="name reported in logs and responses; defaults to host:port")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Init kwargs carry the YAML file here, so the environment must outrank them; flags outrank both.
        return env_settings, init_settings


def load_config(cls: type[C], argv: Sequence[str] | None = None, *, prog: str | None = None) -> C:
    """Build `cls` from command-line flags, then the environment, then `--config FILE.yaml`, then defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, rest = pre.parse_known_args(list(argv or []))
    file_values = read_yaml(known.config) if known.config else {}
    # pydantic-settings reads these underscored init options; mypy does not know them as parameters.
    cli_options: dict[str, Any] = {"_cli_parse_args": rest, "_cli_prog_name": prog}
    return cls(**cli_options, **file_values)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path`, with a clear error when the file is missing or not a mapping."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, not {type(data).__name__}")
    return {str(key).replace("-", "_"): value for key, value in data.items()}
