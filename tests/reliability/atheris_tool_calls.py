"""Fuzz target: the tool-call parser (eigenloop.llm.tool_calls.parse_tool_calls) on arbitrary generated text.

Run with atheris (coverage-guided, libFuzzer flags pass through):
    .venv/bin/python -m tests.reliability.atheris_tool_calls -runs=100000
The suite drives the same `fuzz_one` with hypothesis (tests/reliability/test_atheris_targets.py) and runs a
bounded atheris session where atheris is installed.

Checked for every input: no exception; every call it returns has a name and JSON-object arguments that encode
to UTF-8 (they travel in contract messages); with no markers in the text, nothing is parsed and nothing is
malformed.
"""

from __future__ import annotations

import json

from eigenloop.llm import tool_calls
from eigenloop.llm.tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, parse_tool_calls

# The first byte picks a frame around the rest, so that random bytes reach the JSON inside a block, not only the regex.
FRAMES = (
    ("", ""),
    (TOOL_CALL_OPEN, TOOL_CALL_CLOSE),
    (TOOL_CALL_OPEN + '{"name": "get_order", "arguments": ', "}" + TOOL_CALL_CLOSE),
    (TOOL_CALL_OPEN + '{"name": ', ', "arguments": {}}' + TOOL_CALL_CLOSE),
    (TOOL_CALL_OPEN + '{"name": "a", "arguments": "', '"}' + TOOL_CALL_CLOSE),  # arguments JSON-encoded in a string
    ("Sure. ", " " + TOOL_CALL_OPEN + '{"name": "a", "arguments": {}}' + TOOL_CALL_CLOSE),
)


def fuzz_one(data: bytes) -> None:
    prefix, suffix = FRAMES[data[0] % len(FRAMES)] if data else FRAMES[0]
    text = prefix + data[1:].decode("utf-8", "replace") + suffix
    parsed = parse_tool_calls(text)
    for call in parsed.tool_calls:
        assert call.name and isinstance(json.loads(call.arguments_json), dict)
        call.name.encode(), call.arguments_json.encode()  # raise on lone surrogates
    if TOOL_CALL_OPEN not in text and TOOL_CALL_CLOSE not in text:
        assert not parsed.tool_calls and not parsed.malformed and parsed.text == text.strip()


if __name__ == "__main__":
    from tests.reliability.fuzzing import run_atheris

    run_atheris(fuzz_one, [tool_calls])
