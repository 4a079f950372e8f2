"""Read tau2-bench's telecom data (`db.toml` and `user_db.toml`) into eigenloop's telecom state."""

from __future__ import annotations

import tomllib
from pathlib import Path

from eigenloop.domains.base import DomainState
from eigenloop.domains.telecom.db import TelecomDB, TelecomUserDB


def load_tau2_state(data_dir: Path | str) -> DomainState:
    """The agent DB from `db.toml` and the phone from `user_db.toml` (a default phone when that file is absent).

    Raises FileNotFoundError without `db.toml`, and pydantic's ValidationError when a file does not fit the models.
    """
    root = Path(data_dir)
    with (root / "db.toml").open("rb") as f:
        db = TelecomDB.model_validate(tomllib.load(f))
    user_file = root / "user_db.toml"
    if user_file.exists():
        with user_file.open("rb") as f:
            user = TelecomUserDB.model_validate(tomllib.load(f))
    else:
        user = TelecomUserDB()
    return DomainState(db=db, user=user)
