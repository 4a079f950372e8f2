"""The service packages under services/ and their Dockerfiles, as the deploy tests read them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from tests.support import REPO

SERVICES = sorted(p.parent for p in REPO.glob("services/*/pyproject.toml"))
DOCKERFILES = sorted(REPO.glob("services/*/Dockerfile*"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(s for s in path.read_text().splitlines() if not s.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def project(service: Path) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((service / "pyproject.toml").read_text())["project"]
    return data


def needs_torch(service: Path) -> bool:
    return any("[local]" in d or d.startswith("torch") for d in project(service)["dependencies"])
