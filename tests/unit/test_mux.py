"""Multiplexers' bookkeeping: one stream per replica, replaced once broken, forgotten once its replica is gone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from eigenloop.rpc.mux import Multiplexers
from eigenloop.rpc.pool import Lease
from eigenloop.rpc.stream import StreamClosedError


class _Streams:
    """Fake RPC: each call is a stream that stays open until `end(address)`, as a replica's server would."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self._ends: dict[str, threading.Event] = {}

    def method_of(self, channel: Any) -> Any:
        address = channel

        def call(requests: Iterator[Any]) -> Iterator[Any]:
            self.opened.append(address)
            ended = self._ends.setdefault(address, threading.Event())

            def responses() -> Iterator[Any]:
                ended.wait(5)
                return
                yield

            return responses()

        return call

    def end(self, address: str) -> None:
        self._ends.pop(address).set()


def _wait_broken(muxes: Multiplexers, address: str) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        mux = muxes._by_address.get(address)
        if mux is None or mux.broken is not None:
            return
        time.sleep(0.01)
    raise AssertionError(f"{address}'s stream did not break")


def test_one_stream_per_replica_replaced_once_broken_and_forgotten_once_gone() -> None:
    streams = _Streams()
    muxes = Multiplexers(streams.method_of, object, service="fake")
    a, b = Lease("a:1", "a:1"), Lease("b:1", "b:1")  # type: ignore[arg-type]  # the fake's channel is its address
    try:
        muxes.open(a, 1.0), muxes.open(a, 1.0), muxes.open(b, 1.0)
        assert streams.opened == ["a:1", "b:1"]  # keys of one replica share its stream

        streams.end("a:1")  # replica a restarts: its stream ends under its open keys
        _wait_broken(muxes, "a:1")
        muxes.open(a, 1.0)
        assert streams.opened == ["a:1", "b:1", "a:1"]  # a fresh stream, not the broken one

        streams.end("b:1")  # replica b leaves for good: discovery hands out only a from now on
        _wait_broken(muxes, "b:1")
        muxes.open(a, 1.0)
        assert set(muxes._by_address) == {"a:1"}  # b's broken stream is not kept around
    finally:
        for address in list(streams._ends):
            streams.end(address)
        muxes.close()


def test_a_broken_stream_fails_its_open_keys() -> None:
    streams = _Streams()
    muxes = Multiplexers(streams.method_of, object, service="fake")
    try:
        key = muxes.open(Lease("a:1", "a:1"), 1.0)  # type: ignore[arg-type]
        streams.end("a:1")
        with pytest.raises(StreamClosedError, match="fake a:1"):
            key.send(object())
    finally:
        muxes.close()
