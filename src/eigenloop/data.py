"""Dataset files: JSONL, one contract message per line, written atomically; loadable with `datasets` too."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from eigenloop.contracts.v1 import common_pb2 as pb

M = TypeVar("M", bound=Message)


class DataFormatError(ValueError):
    """A record that cannot be read; the message names the file and the line."""


def to_record(message: Message) -> dict[str, object]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def task_content_hash(task: pb.Task) -> str:
    """sha256 of the task's content without its provenance, so the same task hashes the same wherever it came from."""
    content = pb.Task()
    content.CopyFrom(task)
    content.ClearField("provenance")
    return hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()


def write_jsonl(path: Path, messages: Iterable[Message]) -> int:
    """Write all records or none: a temporary file in the same folder, fsynced, then renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w") as out:
            for message in messages:
                out.write(json.dumps(to_record(message), sort_keys=True) + "\n")
                count += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def read_jsonl(path: Path, message_type: type[M]) -> list[M]:
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    records = []
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json_format.ParseDict(json.loads(line), message_type()))
            except (json.JSONDecodeError, json_format.ParseError) as exc:
                raise DataFormatError(f"{path}:{number}: not a {message_type.__name__} record: {exc}") from None
    return records


def read_tasks(path: Path) -> list[pb.Task]:
    return read_jsonl(path, pb.Task)
