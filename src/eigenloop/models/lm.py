"""Small Qwen2 causal LMs built from a config, for training from scratch on a CPU.

Sizes follow ../shared/notes/learnability.md: on 2 CPU cores and a ~100 s SFT budget, ~1M parameters (`small`) learned
templated tool use best; 0.25M learned nothing in 300 steps and 3M was too slow per step. `tiny` is for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from eigenloop.data import atomic_directory


@dataclass(frozen=True)
class ModelPreset:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(64, 2, 4, 2, 192),  # ~0.15M with a 600-token vocabulary: tests
    "xs": ModelPreset(64, 4, 4, 4, 192),  # ~0.25M
    "small": ModelPreset(128, 4, 4, 4, 384),  # ~0.93M: the embedded-mode default
    "medium": ModelPreset(192, 6, 6, 6, 576),  # ~3M
}


def build_model(
    preset: str | ModelPreset,
    tokenizer: Any,
    *,
    max_position_embeddings: int = 2048,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2ForCausalLM sized by `preset`, its vocabulary and special ids from `tokenizer`."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def save_model(out_dir: Path, tokenizer: Any, model: Any) -> Path:
    """Tokenizer + config + safetensors weights in the transformers layout (loadable with from_pretrained), written
    as a whole folder or not at all (a reader never loads half a model)."""
    with atomic_directory(out_dir) as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
    return out_dir
