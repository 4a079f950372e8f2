"""Domain registry: built-in domains by name, plus any installed under the `eigenloop.domains` entry point."""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from eigenloop.domains.base import Domain

BUILTIN = {
    "airline": "eigenloop.domains.airline",
    "retail": "eigenloop.domains.retail",
    "telecom": "eigenloop.domains.telecom",
    "toy": "eigenloop.domains.toy",
}
ENTRY_POINT_GROUP = "eigenloop.domains"


class UnknownDomainError(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown domain {self.name!r}; available: {', '.join(available_domains())}"


def available_domains() -> list[str]:
    plugged = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(set(BUILTIN) | plugged)


@cache
def load_domain(name: str) -> Domain:
    """The domain called `name`; a built-in module exposes DOMAIN, an entry point names a Domain object."""
    if name in BUILTIN:
        domain = importlib.import_module(BUILTIN[name]).DOMAIN
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not matches:
            raise UnknownDomainError(name)
        domain = matches[0].load()
    if not isinstance(domain, Domain):
        raise TypeError(f"domain {name!r} resolved to {type(domain).__name__}, not a Domain")
    return domain
