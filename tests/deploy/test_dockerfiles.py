"""Every service has a Dockerfile built the same way; hadolint finds nothing in any of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.services import DOCKERFILES, SERVICES, instructions, needs_torch, project
from tests.support import REPO


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_service_image_is_multi_stage_non_root_with_health_check_and_the_launcher_entry_point(service: Path) -> None:
    steps = instructions(service / "Dockerfile")
    kinds = [k for k, _ in steps]
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert kinds.count("FROM") >= 2 and all(a.startswith("${BASE_IMAGE}") for k, a in steps if k == "FROM")
    final = steps[len(kinds) - 1 - kinds[::-1].index("FROM") :]
    user = [a for k, a in final if k == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and int(user[-1].split(":")[0]) != 0
    assert any(k == "HEALTHCHECK" for k, _ in final)
    # The image runs the function `eigenloop up` runs: the console script of the registered server module.
    (entry,) = [json.loads(a) for k, a in final if k == "ENTRYPOINT"]
    meta = project(service)
    (module,) = meta["entry-points"]["eigenloop.services"].values()
    assert meta["scripts"][entry[0]] == f"{module}:main"
    installs = " ".join(a for k, a in steps if k == "RUN" and "pip install" in a)
    assert f"./services/{service.name}" in installs
    if not needs_torch(service):
        # A torch-free service gets torch only through an explicit build argument.
        assert "[local]" not in installs.replace("${EXTRAS}", "")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_context_leaves_out_everything_but_the_packages() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:5] == ["*", "!pyproject.toml", "!README.md", "!src", "!services"]
