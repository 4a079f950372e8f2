"""Dialogue → tokens: template deltas, masks over policy tokens only, the prefix check, sampled ids kept as sampled.

Tried: a toy reference dialogue with tool calls (decodes to the template's rendering of the whole dialogue; mask-1
tokens decode to exactly the assistant bodies); the incremental builder fed the same ids as "sampled" (identical to
tokenize_dialogue); a turn cut before its end marker (closed with a mask-0 marker); dual-control user tool calls
(hidden from the agent); a template that groups consecutive tool results (fine when they arrive as one block); a
template that rewrites history (TemplateError); malformed tool calls read back from sampled ids.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("transformers")

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import load_domain, sample_tasks
from eigenloop.llm.base import to_template_messages
from eigenloop.protocol import tool_call, tool_schema
from eigenloop.rollout.tokens import (
    DialogueTokens,
    TemplateError,
    chat_message,
    read_policy_turn,
    tokenize_dialogue,
    tool_specs,
)

SYSTEM = "You help customers of the toy shop."


def reference_dialogue(domain_name: str = "retail") -> tuple[list[pb.Message], list[pb.ToolSchema]]:
    task = sample_tasks(domain_name)[0]
    domain = load_domain(domain_name)
    return list(task.reference_dialogue), [tool_schema(t) for t in domain.tools]


def template_dicts(messages: list[pb.Message]) -> list[dict[str, Any]]:
    return to_template_messages([chat_message(m) for m in messages])


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_dialogue_decodes_to_the_template_rendering_and_masks_the_assistant_bodies(tokenizer: Any, domain: str) -> None:
    messages, tools = reference_dialogue(domain)
    assert any(m.tool_calls for m in messages)
    tokens = tokenize_dialogue(tokenizer, messages, tools, SYSTEM)
    assert len(tokens.token_ids) == len(tokens.policy_mask)
    full = [pb.Message(role=pb.ROLE_SYSTEM, content=SYSTEM), *messages]
    expected = tokenizer.apply_chat_template(template_dicts(full), tools=tool_specs(tools), tokenize=False)
    assert tokenizer.decode(tokens.token_ids) == expected

    # Each maximal run of mask-1 tokens is one assistant turn's body, through its turn-end marker.
    runs: list[list[int]] = []
    previous = 0
    for token, mask in zip(tokens.token_ids, tokens.policy_mask, strict=True):
        if mask and not previous:
            runs.append([])
        if mask:
            runs[-1].append(token)
        previous = mask
    bodies = [tokenizer.decode(r) for r in runs]
    assistants = [m for m in messages if m.role == pb.ROLE_ASSISTANT]
    assert len(bodies) == len(assistants)
    for body, message in zip(bodies, assistants, strict=True):
        assert body.endswith("<|im_end|>")
        read = read_policy_turn(tokenizer, tokenizer.encode(body, add_special_tokens=False)).message
        assert read.content == message.content.strip()
        assert [(c.name, json.loads(c.arguments_json)) for c in read.tool_calls] == [
            (c.name, json.loads(c.arguments_json)) for c in message.tool_calls
        ]


def test_sampled_ids_are_kept_as_sampled_and_match_sft_tokens(tokenizer: Any) -> None:
    messages, tools = reference_dialogue()
    sft = tokenize_dialogue(tokenizer, messages, tools, SYSTEM)
    episode = DialogueTokens(tokenizer, tools, SYSTEM)
    block: list[pb.Message] = []
    for version, message in enumerate(messages):
        if message.role != pb.ROLE_ASSISTANT:
            block.append(message)
            continue
        episode.extend(block)
        block = []
        prompt = episode.prompt()
        assert prompt[: len(episode.token_ids)] == episode.token_ids
        # What the policy would sample: the SFT body, token for token.
        start = len(prompt)
        end = start
        while sft.policy_mask[end] == 1:
            end += 1
        sampled = sft.token_ids[start:end]
        assert sft.token_ids[:start] == prompt
        episode.add_policy_turn(sampled, [-0.5] * len(sampled), version, message)
        assert episode.turns[-1] == pb.TurnSpan(start=start, end=end, policy_version=version)
    episode.extend(block)
    assert episode.result() == sft
    assert [lp != 0 for lp in episode.logprobs] == [m == 1 for m in episode.policy_mask]
    trace = episode.trace()
    assert list(trace.policy_mask) == sft.policy_mask


def test_a_turn_cut_before_its_end_marker_is_closed_unmasked(tokenizer: Any) -> None:
    episode = DialogueTokens(tokenizer)
    episode.extend([pb.Message(role=pb.ROLE_USER, content="cancel my order please")])
    sampled = tokenizer.encode("the order", add_special_tokens=False)
    episode.add_policy_turn(sampled, [-1.0] * len(sampled), 3, read_policy_turn(tokenizer, sampled).message)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    span = episode.turns[0]
    assert episode.token_ids[span.start : span.end] == sampled
    assert episode.token_ids[span.end] == end and episode.policy_mask[span.end] == 0
    assert sum(episode.policy_mask) == len(sampled)
    assert tokenizer.decode(episode.token_ids).endswith("<|im_start|>assistant\nthe order<|im_end|>\n")


def test_user_tool_calls_and_their_results_are_hidden_from_the_agent(tokenizer: Any) -> None:
    user_call = tool_call("toggle_airplane_mode", {}, call_id="call_0")
    user_call.side = pb.TOOL_SIDE_USER
    result = pb.ToolResult(call_id="call_0", name="toggle_airplane_mode", content='"ok"')
    dual = [
        pb.Message(role=pb.ROLE_USER, content="my phone has no data"),
        pb.Message(role=pb.ROLE_USER, tool_calls=[user_call]),
        pb.Message(role=pb.ROLE_TOOL, content=result.content, tool_result=result),
        pb.Message(role=pb.ROLE_USER, content="done, still nothing"),
    ]
    plain = [dual[0], dual[3]]
    assert tokenize_dialogue(tokenizer, dual) == tokenize_dialogue(tokenizer, plain)
    assert "toggle_airplane_mode" not in tokenizer.decode(tokenize_dialogue(tokenizer, dual).token_ids)


# Like Qwen2.5's: consecutive tool results share one user turn, closed after the last of them.
GROUPING_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message.role == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user{% endif %}"
    "\n<tool_response>{{ message.content }}</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>\n{% endif %}"
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n{{ message.content }}"
    "{% for call in message.tool_calls or [] %}<tool_call>{{ call.function | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def two_calls_then_results() -> list[pb.Message]:
    calls = [tool_call("get_order", {"order_id": f"O{i}"}, call_id=f"call_{i}") for i in range(2)]
    results = [pb.ToolResult(call_id=c.id, name=c.name, content=f'{{"id": "O{i}"}}') for i, c in enumerate(calls)]
    return [
        pb.Message(role=pb.ROLE_USER, content="two orders"),
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=calls),
        *[pb.Message(role=pb.ROLE_TOOL, content=r.content, tool_result=r) for r in results],
        pb.Message(role=pb.ROLE_ASSISTANT, content="both pending"),
    ]


def test_grouped_tool_results_are_one_block(tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizer, "chat_template", GROUPING_TEMPLATE)
    messages = two_calls_then_results()
    tokens = tokenize_dialogue(tokenizer, messages)
    assert tokenizer.decode(tokens.token_ids) == tokenizer.apply_chat_template(template_dicts(messages), tokenize=False)

    episode = DialogueTokens(tokenizer)
    episode.extend(messages[:1])
    episode.add_assistant(messages[1])
    episode.extend(messages[2:3])  # one result at a time: the template rewrites the first one's closing
    with pytest.raises(TemplateError, match="not prefix-stable"):
        episode.extend(messages[3:4])


def test_a_template_that_rewrites_history_fails_loudly(tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Numbers every turn with the total count: each new message rewrites all earlier ones.
    monkeypatch.setattr(
        tokenizer,
        "chat_template",
        "{% for m in messages %}[{{ messages | length }}] {{ m.role }}: {{ m.content }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}",
    )
    with pytest.raises(TemplateError, match="prefix-stable"):
        tokenize_dialogue(
            tokenizer,
            [pb.Message(role=pb.ROLE_USER, content="hi"), pb.Message(role=pb.ROLE_ASSISTANT, content="hello")],
        )


def test_an_assistant_turn_first_is_refused(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="nothing to respond to"):
        tokenize_dialogue(tokenizer, [pb.Message(role=pb.ROLE_ASSISTANT, content="hello")])


def test_malformed_tool_calls_are_reported(tokenizer: Any) -> None:
    good = read_policy_turn(
        tokenizer,
        tokenizer.encode(
            'ok<tool_call>{"name": "get_order", "arguments": {"order_id": "O1"}}</tool_call><|im_end|>',
            add_special_tokens=False,
        ),
    )
    assert not good.malformed
    assert good.message.content == "ok"
    assert [(c.name, c.arguments_json, c.side) for c in good.message.tool_calls] == [
        ("get_order", '{"order_id": "O1"}', pb.TOOL_SIDE_AGENT)
    ]
    bad = read_policy_turn(tokenizer, tokenizer.encode("<tool_call>{not json</tool_call>", add_special_tokens=False))
    assert bad.malformed and not bad.message.tool_calls
