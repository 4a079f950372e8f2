"""A byte-level BPE chat tokenizer trained from text in about a second.

Digits are split one per token before BPE, so ids never seen in training (order O10482, user U0031) are still
spelled with known tokens and a small model can copy them. The ChatML role markers are special tokens; the tool-call
markers are atomic added tokens that are *not* special, as in Qwen's tokenizer, so they survive
`decode(skip_special_tokens=True)` and tool calls can be parsed back out of generated text.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|im_end|>"
PAD = "<|endoftext|>"
BOS_TURN = "<|im_start|>"
# EOS first so it is token id 0, then the padding token and the turn opener.
SPECIAL_TOKENS = [EOS, PAD, BOS_TURN]
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# Qwen-flavoured ChatML: tools listed in the system turn, Hermes-style <tool_call> blocks in assistant turns (what
# eigenloop.llm.local.parse_tool_calls reads back). Every message renders independently of the ones after it, so
# a dialogue's tokens are the concatenation of per-message deltas (what eigenloop.rollout.tokens relies on).
CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n{% if messages[0].role == 'system' %}{{ messages[0].content }}\n{% endif %}"
    "<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'assistant' %}<|im_start|>assistant\n{{ message.content }}"
    "{% for call in message.tool_calls or [] %}<tool_call>"
    "{{ {'name': call.function.name, 'arguments': call.function.arguments} | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n"
    "{% elif message.role != 'system' %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 600, *, split_digits: bool = True
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; the result has the chat template and EOS/PAD set, EOS being id 0.

    `vocab_size` is an upper bound: BPE stops early when the corpus has no more merges to offer.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + specials), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE)])
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, chat_template=CHAT_TEMPLATE
    )
    if tokenizer.eos_token_id != 0:
        raise AssertionError(f"EOS must be token id 0, got {tokenizer.eos_token_id}")
    return tokenizer
