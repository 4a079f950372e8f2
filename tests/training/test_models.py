from __future__ import annotations

from pathlib import Path

import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.inference.engine import load_tokenizer_and_model
from eigenloop.llm.base import ChatMessage
from eigenloop.llm.local import TransformersBackend
from eigenloop.models import PRESETS, TOOL_CALL_OPEN, build_model, save_model, train_tokenizer
from eigenloop.rollout.tokens import tokenize_dialogue

CORPUS = ["please cancel order O10042 now", 'get_order {"order_id": "O10042"}', "the order is pending"] * 20


def test_tokenizer_splits_digits_and_keeps_markers_atomic() -> None:
    tok = train_tokenizer(CORPUS, vocab_size=320)
    assert tok.eos_token_id == 0
    pieces = tok.tokenize("O98731")
    assert pieces[-5:] == ["9", "8", "7", "3", "1"]  # unseen ids are spelled digit by digit
    ids = tok.encode(f"{TOOL_CALL_OPEN}x</tool_call><|im_end|>", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids[0]) == TOOL_CALL_OPEN
    # Tool-call markers survive skip_special_tokens (they are parsed out of generated text); EOS does not.
    assert tok.decode(ids, skip_special_tokens=True) == "<tool_call>x</tool_call>"


def test_tokenizer_rejects_a_vocabulary_smaller_than_the_bytes() -> None:
    with pytest.raises(ValueError, match="at least 259"):
        train_tokenizer(CORPUS, vocab_size=100)


def test_unknown_preset_is_named() -> None:
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        build_model("huge", train_tokenizer(CORPUS, vocab_size=300))


def test_small_preset_matches_the_learnability_recipe() -> None:
    tok = train_tokenizer(CORPUS, vocab_size=300)
    model = build_model("small", tok)
    params = sum(p.numel() for p in model.parameters())
    assert PRESETS["small"].hidden_size == 128
    assert 0.8e6 < params < 1.0e6
    assert model.config.tie_word_embeddings


def test_saved_model_loads_through_the_normal_transformers_path(tmp_path: Path) -> None:
    tok = train_tokenizer(CORPUS, vocab_size=300)
    out = save_model(tmp_path / "m", tok, build_model("tiny", tok))
    assert (out / "model.safetensors").is_file()
    tok2, model2 = load_tokenizer_and_model(out)
    assert tok2.encode("O10042") == tok.encode("O10042")
    assert model2.config.vocab_size == len(tok)
    dialogue = [
        pb.Message(role=pb.ROLE_USER, content="cancel O10042"),
        pb.Message(role=pb.ROLE_ASSISTANT, content="Done."),
    ]
    tokens = tokenize_dialogue(tok2, dialogue, system_prompt="Be brief.")
    assert tok2.decode([t for t, m in zip(tokens.token_ids, tokens.policy_mask, strict=True) if m]) == "Done.<|im_end|>"
    completion = TransformersBackend(out).complete([ChatMessage("user", "cancel O10042")], max_tokens=3)
    assert completion.completion_tokens <= 3
