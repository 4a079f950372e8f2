"""From-scratch models for the embedded mode: a byte-level BPE chat tokenizer and small Qwen2 causal LMs.

Both are saved in the ordinary transformers layout (tokenizer.json + config.json + model.safetensors), so a model
built here loads wherever a hub checkpoint does (`eigenloop.inference.engine.load_tokenizer_and_model`,
inference, user_sim).
"""

from eigenloop.models.lm import PRESETS, ModelPreset, build_model, save_model
from eigenloop.models.tokenizer import CHAT_TEMPLATE, EOS, PAD, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, train_tokenizer

__all__ = [
    "CHAT_TEMPLATE",
    "EOS",
    "PAD",
    "PRESETS",
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "ModelPreset",
    "build_model",
    "save_model",
    "train_tokenizer",
]
