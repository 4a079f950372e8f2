"""Each service installs only what it needs: toolenv's dependency closure carries no torch."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEAVY = {"torch", "transformers", "vllm"}


def closure(distribution: str) -> set[str]:
    """Every distribution `distribution` installs, following the extras each requirement asks for."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = [(distribution, frozenset[str]())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        names.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        for line in reqs:
            req = Requirement(line)
            wanted = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras or {""})
            if wanted:
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return names


def test_toolenv_install_carries_no_torch() -> None:
    deps = closure("eigenloop-toolenv")
    assert "eigenloop" in deps and "grpcio" in deps
    assert not deps & HEAVY, deps & HEAVY


def test_user_sim_install_carries_no_torch_unless_asked() -> None:
    assert not closure("eigenloop-user-sim") & HEAVY


def test_inference_install_carries_the_model_runtime() -> None:
    deps = closure("eigenloop-inference")
    assert {"torch", "transformers"} <= deps
