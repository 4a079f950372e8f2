"""Domain registry.

Names resolve, in order, to: a built-in domain (eigenloop/domains/<name>/), a domain installed under the
`eigenloop.domains` entry point, or a domain folder in EIGENLOOP_DOMAIN_PATH (a `:`-separated list of
folders; each subfolder whose __init__.py defines DOMAIN is a domain). `<name>@tau2` is domain <name> whose
state is tau2-bench's DB, read from $EIGENLOOP_TAU2_DATA/<name> (for tasks imported with `import-tau2`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Domain, DomainState

BUILTIN = {
    "airline": "eigenloop.domains.airline",
    "retail": "eigenloop.domains.retail",
    "telecom": "eigenloop.domains.telecom",
    "toy": "eigenloop.domains.toy",
}
ENTRY_POINT_GROUP = "eigenloop.domains"
PATH_VARIABLE = "EIGENLOOP_DOMAIN_PATH"
TAU2_VARIABLE = "EIGENLOOP_TAU2_DATA"


class UnknownDomainError(KeyError):
    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(name)
        self.name = name
        self.reason = reason

    def __str__(self) -> str:
        return self.reason or f"unknown domain {self.name!r}; available: {', '.join(available_domains())}"


def _folder_domains() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in filter(None, os.environ.get(PATH_VARIABLE, "").split(os.pathsep)):
        for candidate in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
            if (candidate / "__init__.py").is_file():
                found.setdefault(candidate.name, candidate)
    return found


def _tau2_dir() -> Path | None:
    value = os.environ.get(TAU2_VARIABLE)
    return Path(value) if value else None


def available_domains() -> list[str]:
    names = set(BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | set(_folder_domains())
    tau2 = _tau2_dir()
    if tau2 is not None:
        names |= {f"{name}@tau2" for name in BUILTIN if (tau2 / name).is_dir()}
    return sorted(names)


@cache
def load_domain(name: str) -> Domain:
    """The domain called `name` (see the module docstring for where names come from)."""
    base, _, source = name.partition("@")
    if source:
        if source != "tau2":
            raise UnknownDomainError(name, f"unknown state source {source!r} in {name!r}; the one source is 'tau2'")
        root = _tau2_dir()
        if root is None:
            raise UnknownDomainError(name, f"{name} needs {TAU2_VARIABLE} set to a tau2 data folder (holding {base}/)")
        return tau2_domain(load_domain(base), root / base)
    if name in BUILTIN:
        domain = importlib.import_module(BUILTIN[name]).DOMAIN
    elif matches := [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]:
        domain = matches[0].load()
    elif (folder := _folder_domains().get(name)) is not None:
        domain = _import_folder(name, folder)
    else:
        raise UnknownDomainError(name)
    if not isinstance(domain, Domain):
        raise TypeError(f"domain {name!r} resolved to {type(domain).__name__}, not a Domain")
    return domain


def sample_tasks(name: str, seed: int = 0) -> list[pb.Task]:
    """A domain's built-in sample tasks (`sample_tasks(seed)` in its `tasks` module); [] when it has none."""
    domain = load_domain(name)
    module_name = BUILTIN.get(domain.name)
    if module_name is None:
        return []
    try:
        module = importlib.import_module(f"{module_name}.tasks")
    except ModuleNotFoundError as exc:
        if exc.name != f"{module_name}.tasks":
            raise  # the module exists but its own import failed: a bug to show, not an absence
        return []
    tasks: list[pb.Task] = module.sample_tasks(seed)
    return tasks


def _import_folder(name: str, folder: Path) -> object:
    module_name = f"eigenloop_domain_{name}"
    spec = importlib.util.spec_from_file_location(
        module_name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:
        raise UnknownDomainError(name, f"cannot import domain folder {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "DOMAIN"):
        raise UnknownDomainError(name, f"{folder / '__init__.py'} defines no DOMAIN")
    return module.DOMAIN


def tau2_domain(domain: Domain, data_dir: Path) -> Domain:
    """`domain` with tau2-bench's DB and policy from `data_dir` (a tau2 domain folder: db.json, policy.md...)."""
    from eigenloop.tau2 import load_policy

    name = f"{domain.name}@tau2"
    if domain.from_tau2 is None or not data_dir.is_dir():
        raise UnknownDomainError(name, f"{name}: no tau2 data for {domain.name} in {data_dir}")
    loaded = cache(lambda: domain.from_tau2(data_dir))  # type: ignore[misc]

    def make_state(seed: int) -> DomainState:
        return loaded()  # tau2's DB is fixed: the seed does not change it

    return dataclasses.replace(domain, name=name, policy=load_policy(data_dir), make_state=make_state)
