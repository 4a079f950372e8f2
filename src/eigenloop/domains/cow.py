"""Copy-on-write tables, so that a session costs what it touches, not the size of the domain's DB.

A domain DB's dict-valued fields (flights, users, reservations, ...) become `CowDict`s in every session:
a shallow copy of the shared table whose entries are deep-copied the first time they are reached by key
(`db.orders[oid]`, `.get`). Tools therefore mutate only their own copies. Iterating (`.values()`,
`.items()`) yields the shared entries and is for reading only: that is the one rule tools follow.

Each table also carries an order-independent digest: the sum (mod 2**256) of sha256(key, entry) over its
entries. The shared table's per-entry hashes are computed once; a session's digest then needs only the
entries it reached or changed, which is what makes evaluating an episode on a 7 MB DB cheap.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

_MOD = 2**256


def entry_hash(key: Any, value: Any) -> int:
    dumped = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    text = json.dumps([str(key), dumped], sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")


class _SharedTable:
    """The table every session starts from; never mutated, its entry hashes computed once on demand."""

    def __init__(self, items: dict[Any, Any]) -> None:
        self.items = items
        self._hashes: dict[Any, int] | None = None
        self.digest = 0

    def hashes(self) -> dict[Any, int]:
        if self._hashes is None:
            self._hashes = {k: entry_hash(k, v) for k, v in self.items.items()}
            self.digest = sum(self._hashes.values()) % _MOD
        return self._hashes


class CowDict(dict[Any, Any]):
    """A session's view of a shared table: entries are copied when first reached by key."""

    def __init__(self, shared: _SharedTable, current: dict[Any, Any] | None = None, dirty: Iterable[Any] = ()) -> None:
        super().__init__(shared.items if current is None else current)
        self._shared = shared
        self._owned: set[Any] = set()
        # Keys whose entry may differ from the shared table's (reached, assigned or deleted).
        self._dirty: set[Any] = set(dirty)

    @classmethod
    def over(cls, table: dict[Any, Any]) -> CowDict:
        """A view of `table`; a view of a view shares the same original table."""
        if isinstance(table, CowDict):
            return cls(table._shared, dict(table.items()), table._dirty)
        return cls(_SharedTable(table))

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        if key not in self._owned:
            value = value.model_copy(deep=True) if isinstance(value, BaseModel) else copy.deepcopy(value)
            super().__setitem__(key, value)
            self._owned.add(key)
            self._dirty.add(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            return default
        return self[key]  # through __getitem__, so the caller gets its own copy

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._owned.add(key)
        self._dirty.add(key)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._owned.discard(key)
        self._dirty.add(key)

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            value = self[key]
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        for key in list(self):
            del self[key]

    def digest(self) -> int:
        shared = self._shared.hashes()
        total = self._shared.digest
        for key in self._dirty:
            total -= shared.get(key, 0)
            if key in self:
                total += entry_hash(key, super().__getitem__(key))
        return total % _MOD

    def changed_keys(self) -> set[Any]:
        return set(self._dirty)

    def same_origin(self, other: object) -> bool:
        return isinstance(other, CowDict) and other._shared is self._shared


def table_digest(value: dict[Any, Any]) -> int:
    """The digest `CowDict.digest` gives, for any dict (computed in full)."""
    if isinstance(value, CowDict):
        return value.digest()
    return sum(entry_hash(k, v) for k, v in value.items()) % _MOD
