"""Fuzz target: the JSON argument validator of tool calls (Tool.parse_arguments, and toolenv's execute around it)
on arbitrary argument text, for every tool of the toy and airline domains.

Run with atheris (coverage-guided, libFuzzer flags pass through):
    .venv/bin/python -m tests.reliability.atheris_arguments -runs=100000
The suite drives the same `fuzz_one` with hypothesis (tests/reliability/test_atheris_targets.py) and runs a
bounded atheris session where atheris is installed.

Checked for every input: parse_arguments either returns keyword arguments or raises ArgumentError (nothing else);
execute never raises and returns a result whose error kind is set and whose content encodes to UTF-8.
"""

from __future__ import annotations

import contextlib

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import base, load_domain
from eigenloop.domains.base import ArgumentError, Tool
from eigenloop.env import session
from eigenloop.env.session import execute
from eigenloop.protocol import SIDE_TO_PB

DOMAINS = [load_domain("toy"), load_domain("airline")]
STATES = [domain.initial_state().copy() for domain in DOMAINS]
TARGETS = [(domain, state, tool) for domain, state in zip(DOMAINS, STATES, strict=True) for tool in domain.tools]


def frames(tool: Tool) -> list[tuple[str, str]]:
    """Around the fuzzed text: nothing, an object, an array, or the value of the tool's first argument."""
    key = next(iter(tool.json_schema.get("properties", {})), "x")
    return [("", ""), ("{", "}"), ("[", "]"), (f'{{"{key}": ', "}")]


def fuzz_one(data: bytes) -> None:
    if len(data) < 2:
        return
    domain, state, tool = TARGETS[data[0] % len(TARGETS)]
    options = frames(tool)
    prefix, suffix = options[data[1] % len(options)]
    arguments = prefix + data[2:].decode("utf-8", "replace") + suffix
    with contextlib.suppress(ArgumentError):
        tool.parse_arguments(arguments)
    result, _ = execute(
        domain, state, pb.ToolCall(name=tool.name, arguments_json=arguments, side=SIDE_TO_PB[tool.side])
    )
    assert result.error_kind != pb.TOOL_ERROR_KIND_UNSPECIFIED
    result.content.encode()


if __name__ == "__main__":
    from tests.reliability.fuzzing import run_atheris

    run_atheris(fuzz_one, [base, session])
