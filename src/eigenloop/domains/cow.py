"""Copy-on-write tables, so that a session costs what it touches, not the size of the domain's DB.

A domain DB's dict- and list-valued fields (flights, users, reservations, lines, ...) become `CowDict`s and
`CowList`s in every session: a shallow copy of the shared table whose entries are deep-copied the first
time they are reached by key or index (`db.orders[oid]`, `.get`, `db.lines[i]`). Tools therefore mutate
only their own copies. Iterating (`.values()`, `.items()`, `for x in db.lines`) yields the shared entries
and is for reading only: that is the one rule tools follow.

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


def _private(value: Any) -> Any:
    return value.model_copy(deep=True) if isinstance(value, BaseModel) else copy.deepcopy(value)


class _SharedTable:
    """The table every session starts from; never mutated, its entry hashes computed once on demand."""

    def __init__(self, items: dict[Any, Any] | list[Any]) -> None:
        self.items = items
        self._hashes: dict[Any, int] | None = None
        self.digest = 0

    def hashes(self) -> dict[Any, int]:
        if self._hashes is None:
            pairs = self.items.items() if isinstance(self.items, dict) else enumerate(self.items)
            self._hashes = {k: entry_hash(k, v) for k, v in pairs}
            self.digest = sum(self._hashes.values()) % _MOD
        return self._hashes


def _digest(shared: _SharedTable, dirty: Iterable[Any], current: dict[Any, Any] | list[Any]) -> int:
    """The shared digest, corrected for the entries that may have changed."""
    hashes = shared.hashes()
    total = shared.digest
    present = (lambda k: k in current) if isinstance(current, dict) else (lambda k: 0 <= k < len(current))
    for key in dirty:
        total -= hashes.get(key, 0)
        if present(key):
            total += entry_hash(
                key, dict.__getitem__(current, key) if isinstance(current, dict) else list.__getitem__(current, key)
            )
    return total % _MOD


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
            value = _private(value)
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
        return _digest(self._shared, self._dirty, self)

    def changed_keys(self) -> set[Any]:
        return set(self._dirty)

    def same_origin(self, other: object) -> bool:
        return isinstance(other, CowDict) and other._shared is self._shared


class CowList(list[Any]):
    """A session's view of a shared list: entries are copied when first reached by index.

    Assigning or appending marks just those indices changed; anything that shifts entries (insert, pop,
    remove, sort, ...) marks the whole list changed, which stays correct and only costs a full digest.
    """

    def __init__(
        self, shared: _SharedTable, current: list[Any] | None = None, dirty: Iterable[int] = (), all_dirty: bool = False
    ) -> None:
        super().__init__(shared.items if current is None else current)
        self._shared = shared
        self._owned: set[int] = set()
        self._dirty: set[int] = set(dirty)
        self._all_dirty = all_dirty

    @classmethod
    def over(cls, table: list[Any]) -> CowList:
        if isinstance(table, CowList):
            return cls(table._shared, list(table), table._dirty, table._all_dirty)
        return cls(_SharedTable(table))

    def _index(self, index: int) -> int:
        return index + len(self) if index < 0 else index

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list.__getitem__(self, index)  # shared entries: for reading
        i = self._index(index)
        value = list.__getitem__(self, i)
        if i not in self._owned:
            value = _private(value)
            list.__setitem__(self, i, value)
            self._owned.add(i)
            self._dirty.add(i)
        return value

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            list.__setitem__(self, index, value)
            self._all_dirty = True
            return
        i = self._index(index)
        list.__setitem__(self, i, value)
        self._owned.add(i)
        self._dirty.add(i)

    def append(self, value: Any) -> None:
        list.append(self, value)
        self._owned.add(len(self) - 1)
        self._dirty.add(len(self) - 1)

    def extend(self, values: Iterable[Any]) -> None:
        for value in values:
            self.append(value)

    def __iadd__(self, values: Iterable[Any]) -> CowList:  # type: ignore[misc]  # list's own += skips append
        self.extend(values)
        return self

    def _shift(self, operation: Any, *args: Any, new: Any = None, **kwargs: Any) -> Any:
        """Run a list method that moves entries; afterwards no index means what it did, so own every entry
        (copying the shared ones, keeping the objects we already own or were given) and digest in full."""
        owned = {id(list.__getitem__(self, i)) for i in self._owned if i < len(self)} | {id(new)}
        result = operation(self, *args, **kwargs)
        for i in range(len(self)):
            entry = list.__getitem__(self, i)
            if id(entry) not in owned:
                list.__setitem__(self, i, _private(entry))
        self._owned = set(range(len(self)))
        self._all_dirty = True
        return result

    def insert(self, index: Any, value: Any) -> None:
        self._shift(list.insert, index, value, new=value)

    def pop(self, index: Any = -1) -> Any:
        return self._shift(list.pop, index)

    def remove(self, value: Any) -> None:
        self._shift(list.remove, value)

    def __delitem__(self, index: Any) -> None:
        self._shift(list.__delitem__, index)

    def sort(self, *args: Any, **kwargs: Any) -> None:
        self._shift(list.sort, *args, **kwargs)

    def reverse(self) -> None:
        self._shift(list.reverse)

    def clear(self) -> None:
        self._shift(list.clear)

    def digest(self) -> int:
        if self._all_dirty:
            return sum(entry_hash(i, v) for i, v in enumerate(list.__iter__(self))) % _MOD
        return _digest(self._shared, self._dirty | set(range(len(self._shared.items), len(self))), self)

    def changed_keys(self) -> set[int]:
        return set(range(max(len(self), len(self._shared.items)))) if self._all_dirty else set(self._dirty)

    def same_origin(self, other: object) -> bool:
        return isinstance(other, CowList) and other._shared is self._shared


def cow_view(value: Any) -> Any:
    """A copy-on-write view of a table, or a deep copy of anything else."""
    if isinstance(value, dict):
        return CowDict.over(value)
    if isinstance(value, list):
        return CowList.over(value)
    return copy.deepcopy(value)


def table_digest(value: dict[Any, Any] | list[Any]) -> int:
    """The digest `CowDict.digest` / `CowList.digest` give, for any dict or list (computed in full)."""
    if isinstance(value, CowDict | CowList):
        return value.digest()
    pairs = value.items() if isinstance(value, dict) else enumerate(value)
    return sum(entry_hash(k, v) for k, v in pairs) % _MOD
