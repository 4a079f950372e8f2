"""Loading tau2-bench's airline data (read at run time from a tau2 checkout; never copied into the project)."""

from __future__ import annotations

from pathlib import Path

from eigenloop.domains.airline.db import AirlineDB
from eigenloop.domains.base import DomainState


def tau2_db_path(data_dir: Path) -> Path:
    """db.json in `data_dir`, which may be tau2's airline folder itself or a folder holding `airline/`."""
    data_dir = Path(data_dir)
    for candidate in (data_dir / "db.json", data_dir / "airline" / "db.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no airline db.json in {data_dir} (nor in {data_dir / 'airline'})")


def load_tau2_state(data_dir: Path) -> DomainState:
    """The airline state from tau2's db.json; the airline domain has no user-side state."""
    return DomainState(db=AirlineDB.model_validate_json(tau2_db_path(data_dir).read_bytes()), user=None)
