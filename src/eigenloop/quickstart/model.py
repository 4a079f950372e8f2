"""The quickstart's tokenizer and untrained model: a BPE trained on the synthesized dialogues, a small Qwen2.

The chat template is eigenloop's ChatML template with a compact tool listing: one line per tool, its name and
argument names, instead of the full JSON Schema with descriptions. The tools are the same; only their rendering
is shorter, and on 2 CPU cores prompt length is the main cost of every SFT step and rollout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers.utils import logging as transformers_logging

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.models import CHAT_TEMPLATE, build_model, save_model, train_tokenizer
from eigenloop.quickstart.config import USER_PROMPT, ModelSection
from eigenloop.training.data import agent_examples, example_texts, user_examples

_JSON_LISTING = "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
_COMPACT_LISTING = (
    "{% for tool in tools %}{{ tool.function.name }}({{ tool.function.parameters.properties | list | join(', ') }})"
    "\n{% endfor %}"
)
if _JSON_LISTING not in CHAT_TEMPLATE:  # pragma: no cover - guards against the template changing under us
    raise ImportError("eigenloop.models.CHAT_TEMPLATE no longer lists tools as JSON; update the compact template")
COMPACT_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(_JSON_LISTING, _COMPACT_LISTING)


def dialogue_texts(tasks: list[pb.Task], prompt: dict[str, Any]) -> list[str]:
    """Every task's dialogue as the agent and as the simulated user see it, rendered by the compact template."""
    bootstrap = train_tokenizer([], vocab_size=259)  # bytes only: enough to render and decode
    bootstrap.chat_template = COMPACT_CHAT_TEMPLATE
    examples = agent_examples(bootstrap, tasks, **prompt) + user_examples(bootstrap, tasks, prompt=USER_PROMPT)
    return example_texts(bootstrap, examples)


def build_model_and_tokenizer(
    tasks: list[pb.Task], spec: ModelSection, out: Path, seed: int, prompt: dict[str, Any]
) -> dict[str, Any]:
    """`out/agent`: the tokenizer and a freshly initialised model (agent SFT starts from it; the user model from the
    agent's SFT model). `prompt`: the agent's prompt options (config.agent_prompt). Returns a summary."""
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # the stage has its own line
    tokenizer = train_tokenizer(dialogue_texts(tasks, prompt), spec.vocab_size)
    tokenizer.chat_template = COMPACT_CHAT_TEMPLATE
    model = build_model(spec.preset, tokenizer, max_position_embeddings=spec.max_position_embeddings, seed=seed)
    save_model(out / "agent", tokenizer, model)
    examples = agent_examples(tokenizer, tasks, **prompt)
    lengths = [len(e.token_ids) for e in examples if not e.malformed]
    return {
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "agent_dialogue_tokens_mean": sum(lengths) / max(len(lengths), 1),
        "agent_dialogue_tokens_max": max(lengths, default=0),
        "malformed_dialogues": len(examples) - len(lengths),
    }
