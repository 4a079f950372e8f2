"""Dataset files: JSONL, one contract message per line, written atomically; loadable with `datasets` too.

Also the atomic writers every other file goes through (JSON documents, whole folders such as checkpoints and
saved models): a reader, or a process started after a crash, sees the old version or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO, TypeVar

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


@contextmanager
def atomic_text_file(path: Path) -> Iterator[TextIO]:
    """Write a whole file or nothing: a temporary file in the same folder, fsynced, then renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Fill a whole folder or nothing: yields a temporary folder beside `path`; when the block ends, every file in
    it is fsynced and it is renamed into place (an existing `path` is moved aside first, then deleted).

    Leftovers of writers killed mid-write (hidden `.<name>.*` siblings) are removed first: one writer per path.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_partial_writes(path.parent, f".{path.name}.*")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_partial_writes(folder: Path, pattern: str) -> None:
    """Delete what killed atomic writers left in `folder`: the hidden temporary entries matching the glob `pattern`
    (`.<name>.*` for a folder, `.<name>.*.tmp` for a file, `**/` in front for every subfolder too). Only for a
    folder whose writer is this process."""
    if not folder.is_dir():
        return
    for leftover in folder.glob(pattern):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(folder)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_jsonl(path: Path, messages: Iterable[Message]) -> int:
    """Write all records or none (see atomic_text_file)."""
    count = 0
    with atomic_text_file(path) as out:
        for message in messages:
            out.write(json.dumps(to_record(message), sort_keys=True) + "\n")
            count += 1
    return count


def write_json_atomic(path: Path, value: object) -> None:
    """One JSON document (indented, keys sorted, so the same value gives the same bytes), written atomically."""
    with atomic_text_file(path) as out:
        json.dump(value, out, indent=2, sort_keys=True)
        out.write("\n")


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
