"""Each service installs only what it needs: toolenv's dependency closure carries no torch."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, requires

HEAVY = {"torch", "transformers", "vllm"}


def closure(distribution: str) -> set[str]:
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        for req in reqs:
            if "extra ==" in req:
                continue
            match = re.match(r"[A-Za-z0-9_.\-]+", req)
            if match:
                todo.append(match.group(0).lower().replace("_", "-"))
    return seen


def test_toolenv_install_carries_no_torch() -> None:
    deps = closure("eigenloop-toolenv")
    assert "eigenloop" in deps and "grpcio" in deps
    assert not deps & HEAVY, deps & HEAVY
