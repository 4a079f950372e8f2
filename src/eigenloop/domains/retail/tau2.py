"""Load tau2-bench's retail data (`db.json`) as an eigenloop state. Retail has no user-side state."""

from __future__ import annotations

from pathlib import Path

from eigenloop.domains.base import DomainState
from eigenloop.domains.retail.db import RetailDB


def load_tau2_state(data_dir: Path) -> DomainState:
    """The state described by `<data_dir>/db.json` (tau2's data/tau2/domains/retail folder)."""
    path = Path(data_dir) / "db.json"
    return DomainState(db=RetailDB.model_validate_json(path.read_bytes()), user=None)
