"""Fuzzing any gRPC method from its protobuf descriptors: hypothesis strategies for random messages, byte-level
mutations of valid ones and wire bytes with invalid UTF-8 in a (possibly nested) string field, plus one helper
that sends raw request bytes to a method and returns the status code name.

Strategies read the descriptor, so a field added to a contract is fuzzed without touching the tests; `overrides`
steer chosen fields (by name; always set) towards values that get past the first checks (a domain that exists, a
tool name).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

F = FieldDescriptor
Overrides = Mapping[str, st.SearchStrategy[Any]]

INTS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
# Valid UTF-8 only (the API refuses surrogates); invalid UTF-8 is made at the wire level by `invalid_utf8`.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in INTS:
        low, high = INTS[field.type]
        return st.integers(-3, 300).filter(lambda v: low <= v <= high) | st.integers(low, high)
    if field.type == F.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.sampled_from(known) | st.integers(-5, 1000)  # open enums: unknown numbers arrive as they are
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_FLOAT:
        return st.floats(width=32)
    if field.type == F.TYPE_DOUBLE:
        return st.floats()
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64)
    return TEXT


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _fill(draw: Callable[[st.SearchStrategy[Any]], Any], message: Message, overrides: Overrides, depth: int) -> None:
    descriptor = message.DESCRIPTOR
    chosen = {oneof.name: draw(st.sampled_from([None, *oneof.fields])) for oneof in descriptor.oneofs}
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and chosen[oneof.name] is not field:
            continue
        if oneof is None and field.name not in overrides and not draw(st.booleans()):
            continue
        scalar = overrides.get(field.name)
        if scalar is None and field.type != F.TYPE_MESSAGE:
            scalar = _scalar(field)
        if _is_map(field):
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            container = getattr(message, field.name)
            for key in draw(st.lists(_scalar(key_field), max_size=3)):
                if value_field.type == F.TYPE_MESSAGE:
                    if depth > 0:
                        _fill(draw, container[key], overrides, depth - 1)
                else:
                    container[key] = draw(_scalar(value_field))
        elif field.is_repeated:
            container = getattr(message, field.name)
            if scalar is not None:
                # An override of a repeated field draws the whole list.
                container.extend(draw(scalar if field.name in overrides else st.lists(scalar, max_size=4)))
            elif depth > 0:
                for _ in range(draw(st.integers(0, 3))):
                    _fill(draw, container.add(), overrides, depth - 1)
        elif scalar is not None:
            setattr(message, field.name, draw(scalar))
        elif depth > 0:
            sub = getattr(message, field.name)
            sub.SetInParent()
            _fill(draw, sub, overrides, depth - 1)


def messages(cls: type[Message], overrides: Overrides | None = None, depth: int = 3) -> st.SearchStrategy[Message]:
    """Random messages of `cls`: any subset of fields, any oneof branch, unknown enum numbers, extreme numbers."""

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        _fill(draw, message, overrides or {}, depth)
        return message

    return build()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def string_paths(descriptor: Descriptor, depth: int = 3) -> list[tuple[FieldDescriptor, ...]]:
    """Every chain of message fields that ends in a string field, up to `depth` messages deep."""
    paths: list[tuple[FieldDescriptor, ...]] = []
    for field in descriptor.fields:
        if field.type == F.TYPE_STRING:
            paths.append((field,))
        elif field.type == F.TYPE_MESSAGE and depth > 0 and not _is_map(field):
            paths.extend((field, *rest) for rest in string_paths(field.message_type, depth - 1))
    return paths


INVALID_UTF8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\xf0\x28\x8c\x28", b"\x80" * 5])


def invalid_utf8(cls: type[Message], base: st.SearchStrategy[Message] | None = None) -> st.SearchStrategy[bytes]:
    """A valid message with one string field, at any depth, set to bytes that are not UTF-8 (appended on the
    wire: the last occurrence of a field wins, and sub-messages merge)."""
    paths = string_paths(cls.DESCRIPTOR)

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        valid = draw(base if base is not None else messages(cls)).SerializeToString()
        path: Sequence[FieldDescriptor] = draw(st.sampled_from(paths))
        payload = draw(INVALID_UTF8)
        for field in reversed(path):
            payload = _length_delimited(field.number, payload)
        return valid + payload

    return build()


def mutated(base: st.SearchStrategy[Message]) -> st.SearchStrategy[bytes]:
    """A valid message's bytes with a few random edits: flipped, deleted, inserted or duplicated bytes, truncation."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(base).SerializeToString())
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "truncate"]))
            if op == "flip" and at < len(data):
                data[at] ^= draw(st.integers(1, 255))
            elif op == "delete":
                del data[at : at + draw(st.integers(1, 8))]
            elif op == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            elif op == "duplicate":
                data[at:at] = data[at : at + draw(st.integers(1, 16))]
            elif op == "truncate":
                del data[at:]
        return bytes(data)

    return build()


def raw_call(
    channel: grpc.Channel,
    method: str,
    requests: Sequence[bytes],
    *,
    client_streaming: bool,
    server_streaming: bool,
    timeout_s: float = 10.0,
    read: int | None = None,
) -> str:
    """Send raw request bytes to `method` ("/pkg.Service/Method") and return the final status code's name.

    `read` stops reading a response stream after that many responses and cancels it (the client going away).
    """
    kinds = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    stub = kinds[(client_streaming, server_streaming)](method, request_serializer=None, response_deserializer=None)
    argument: Any = iter(requests) if client_streaming else requests[0]
    try:
        if not server_streaming:
            stub(argument, timeout=timeout_s)
            return "OK"
        responses = stub(argument, timeout=timeout_s)
        for seen, _ in enumerate(responses, start=1):
            if read is not None and seen >= read:
                responses.cancel()
                return "CANCELLED_BY_CLIENT"
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return "OK"


def keyed_frame(frame_type: type[Message], items: Sequence[tuple[int, Message | None]]) -> bytes:
    """A multiplexed stream's frame (eigenloop.rpc.mux): each (key, request) an entry; a None request closes the key."""
    frame: Any = frame_type()
    for key, request in items:
        frame.items.add(key=key, request=request, close=request is None)
    return bytes(frame.SerializeToString())


def garbage_frames(frame_type: type[Message], overrides: Overrides) -> st.SearchStrategy[bytes]:
    """A frame from the contract with random contents, a mutated one, one with invalid UTF-8, or random bytes."""
    return st.one_of(
        messages(frame_type, overrides).map(lambda m: m.SerializeToString()),
        mutated(messages(frame_type, overrides)),
        invalid_utf8(frame_type),
        st.binary(max_size=300),
    )


def multiplexed_call(
    channel: grpc.Channel,
    method: str,
    frames: Sequence[bytes],
    result_frame: type[Message],
    garbage: bytes | None = None,
    timeout_s: float = 10.0,
) -> tuple[str, set[str]]:
    """Send raw `frames` (with `garbage` in the middle, when given) to a multiplexed stream; returns the stream's final
    status code's name and the status code names with which keys ended (KeyError entries of the answers)."""
    frames = list(frames)
    if garbage is not None:
        frames.insert(len(frames) // 2, garbage)
    call = channel.stream_stream(method, request_serializer=None, response_deserializer=result_frame.FromString)
    key_codes: set[str] = set()
    try:
        for frame in call(iter(frames), timeout=timeout_s):
            key_codes |= {item.error.code for item in frame.items if item.HasField("error")}
    except grpc.RpcError as exc:
        return str(exc.code().name), key_codes
    return "OK", key_codes
