"""Copy-on-write tables: any sequence of operations gives the same contents and digest as a private deep
copy would, and never changes the shared table."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from eigenloop.domains.cow import CowDict, CowList, cow_view, table_digest


class Item(BaseModel):
    n: int
    tags: list[str] = []


def base_dict() -> dict[str, Item]:
    return {f"k{i}": Item(n=i) for i in range(6)}


KEYS = st.sampled_from([f"k{i}" for i in range(8)])
DICT_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("mutate"), KEYS, st.integers(-5, 5)),
        st.tuples(st.just("set"), KEYS, st.integers(-5, 5)),
        st.tuples(st.just("del"), KEYS, st.just(0)),
        st.tuples(st.just("pop"), KEYS, st.just(0)),
        st.tuples(st.just("setdefault"), KEYS, st.integers(-5, 5)),
        st.tuples(st.just("get_tag"), KEYS, st.just(0)),
    ),
    max_size=25,
)


def apply_dict(table: dict[str, Item], op: tuple[str, str, int]) -> None:
    name, key, value = op
    if name == "mutate" and key in table:
        table[key].n += value
    elif name == "set":
        table[key] = Item(n=value)
    elif name == "del" and key in table:
        del table[key]
    elif name == "pop":
        table.pop(key, None)
    elif name == "setdefault":
        table.setdefault(key, Item(n=value))
    elif name == "get_tag" and (item := table.get(key)) is not None:
        item.tags.append("x")


@settings(max_examples=100, deadline=None)
@given(ops=DICT_OPS)
def test_cow_dict_behaves_like_a_private_copy(ops: list[tuple[str, str, int]]) -> None:
    shared = base_dict()
    snapshot = copy.deepcopy(shared)
    view, private = CowDict.over(shared), copy.deepcopy(shared)
    for op in ops:
        apply_dict(view, op)
        apply_dict(private, op)
    assert dict(view) == private
    assert view.digest() == table_digest(private)
    assert shared == snapshot
    child = cow_view(view)  # a session started from a session's state
    apply_dict(child, ("mutate", "k1", 7))
    apply_dict(private, ("mutate", "k1", 7))
    assert child.digest() == table_digest(private)
    assert shared == snapshot


LIST_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("mutate"), st.integers(-8, 7), st.integers(-5, 5)),
        st.tuples(st.just("set"), st.integers(-8, 7), st.integers(-5, 5)),
        st.tuples(st.just("append"), st.just(0), st.integers(-5, 5)),
        st.tuples(st.just("iadd"), st.just(0), st.integers(-5, 5)),
        st.tuples(st.just("insert"), st.integers(-3, 9), st.integers(-5, 5)),
        st.tuples(st.just("pop"), st.integers(-8, 7), st.just(0)),
        st.tuples(st.just("sort"), st.just(0), st.just(0)),
        st.tuples(st.just("reverse"), st.just(0), st.just(0)),
    ),
    max_size=25,
)


def apply_list(table: list[Item], op: tuple[str, int, int]) -> None:
    name, index, value = op
    inside = -len(table) <= index < len(table)
    if name == "mutate" and inside:
        table[index].n += value
    elif name == "set" and inside:
        table[index] = Item(n=value)
    elif name == "append":
        table.append(Item(n=value))
    elif name == "iadd":
        table += [Item(n=value)]
    elif name == "insert":
        table.insert(index, Item(n=value))
    elif name == "pop" and inside:
        table.pop(index)
    elif name == "sort":
        table.sort(key=lambda item: item.n)
    elif name == "reverse":
        table.reverse()


@settings(max_examples=100, deadline=None)
@given(ops=LIST_OPS)
def test_cow_list_behaves_like_a_private_copy(ops: list[tuple[str, int, int]]) -> None:
    shared = list(base_dict().values())
    snapshot = copy.deepcopy(shared)
    view, private = CowList.over(shared), copy.deepcopy(shared)
    for op in ops:
        apply_list(view, op)
        apply_list(private, op)
        view_items: list[Any] = list(view)
        assert view_items == private
    assert view.digest() == table_digest(private)
    assert shared == snapshot


def test_reading_by_key_copies_only_that_entry() -> None:
    shared = base_dict()
    view = CowDict.over(shared)
    view["k1"].n = 100
    assert shared["k1"].n == 1
    assert view["k2"] is not shared["k2"]
    assert next(iter(view.values())) is shared["k0"]  # iteration reads the shared entries
    assert view.changed_keys() == {"k1", "k2"}
