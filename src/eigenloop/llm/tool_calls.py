"""Tool calls in generated text, Qwen/Hermes style: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

Torch-free, so the rollout manager and the OpenAI endpoint read calls the same way without loading a model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from eigenloop.llm.base import ToolCallRequest

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)


@dataclass(frozen=True)
class ParsedToolCalls:
    text: str
    """The generated text with every well-formed `<tool_call>` block removed (malformed ones stay), stripped."""
    tool_calls: tuple[ToolCallRequest, ...]
    malformed: bool
    """True when some block did not parse (bad JSON, no name, arguments not an object, not UTF-8, or unclosed)."""


def _parse_block(body: str) -> tuple[str, str] | None:
    # RecursionError: JSON nested deeper than the interpreter's stack ("[[[[..."), which generated text can be.
    try:
        obj = json.loads(body.strip())
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models emit the arguments JSON-encoded
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return None
    if not isinstance(args, dict):
        return None
    arguments = json.dumps(args, ensure_ascii=False)
    if not (_is_utf8(name) and _is_utf8(arguments)):  # a "\ud800" escape decodes to a lone surrogate: no UTF-8 form,
        return None  # so the call could not travel in a contract message
    return name, arguments


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_tool_calls(text: str) -> ParsedToolCalls:
    """Split Qwen/Hermes-style `<tool_call>` blocks out of `text`; call ids are "call_0", "call_1", ... in order."""
    calls: list[ToolCallRequest] = []
    kept: list[str] = []
    malformed = False
    pos = 0
    for m in _BLOCK.finditer(text):
        kept.append(text[pos : m.start()])
        parsed = _parse_block(m.group(1))
        if parsed is None:
            malformed = True
            kept.append(m.group(0))
        else:
            calls.append(ToolCallRequest(id=f"call_{len(calls)}", name=parsed[0], arguments_json=parsed[1]))
        pos = m.end()
    rest = text[pos:]
    if TOOL_CALL_OPEN in rest or TOOL_CALL_CLOSE in rest:  # unclosed (e.g. cut by max_tokens) or stray closer
        malformed = True
    kept.append(rest)
    return ParsedToolCalls(text="".join(kept).strip(), tool_calls=tuple(calls), malformed=malformed)
