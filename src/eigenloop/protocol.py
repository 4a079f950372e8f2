"""Small constructors and conversions for contract messages, so call sites read like the conversation."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.base import Side, Tool, ToolKind

SIDE_TO_PB = {Side.AGENT: pb.TOOL_SIDE_AGENT, Side.USER: pb.TOOL_SIDE_USER}
KIND_TO_PB = {
    ToolKind.READ: pb.TOOL_KIND_READ,
    ToolKind.WRITE: pb.TOOL_KIND_WRITE,
    ToolKind.THINK: pb.TOOL_KIND_THINK,
    ToolKind.GENERIC: pb.TOOL_KIND_GENERIC,
}


def side_from_pb(value: pb.ToolSide.ValueType | int) -> Side:
    """Unspecified means the agent: that is who calls tools in every domain."""
    return Side.USER if value == pb.TOOL_SIDE_USER else Side.AGENT


def tool_call(
    name: str, arguments: dict[str, Any] | None = None, *, side: Side = Side.AGENT, call_id: str = ""
) -> pb.ToolCall:
    return pb.ToolCall(id=call_id, name=name, arguments_json=json.dumps(arguments or {}), side=SIDE_TO_PB[side])


def text_message(role: pb.Role.ValueType, content: str) -> pb.Message:
    return pb.Message(role=role, content=content)


def assistant_calls(*calls: pb.ToolCall) -> pb.Message:
    return pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=list(calls))


def tool_message(result: pb.ToolResult) -> pb.Message:
    return pb.Message(role=pb.ROLE_TOOL, content=result.content, tool_result=result)


def arguments_of(call: pb.ToolCall) -> dict[str, Any]:
    """The call's arguments as a dict; {} when they are not a JSON object (such calls fail validation anyway)."""
    try:
        value = json.loads(call.arguments_json or "{}")
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the interpreter's stack ("[[[[...")
        return {}
    return value if isinstance(value, dict) else {}


@cache
def tool_schema(tool: Tool) -> pb.ToolSchema:
    """The contract form of a tool (cached: tools are immutable and schemas are sent with every session)."""
    return pb.ToolSchema(
        name=tool.name,
        description=tool.description,
        parameters_json_schema=json.dumps(tool.json_schema),
        side=SIDE_TO_PB[tool.side],
        kind=KIND_TO_PB[tool.kind],
    )
