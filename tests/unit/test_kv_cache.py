"""ReservedLayer against transformers' DynamicLayer: the same keys and values after every update, whether the
updates fit the reserved room or outgrow it, and after a reset; a tiny Qwen2 decodes the same logits with either.

Tried: a prefill then single-token steps (capacity 0, 6 and 64: growing at the first update and twice more, twice,
never); a multi-token update after the room ran out; reset then reuse; a sliding-window config (its sliding layers
kept); the engine continuing a cached prefix with more new tokens than it generates (its caches allocate once).
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from transformers import DynamicCache  # noqa: E402
from transformers.cache_utils import DynamicLayer  # noqa: E402

from eigenloop.inference.kv_cache import ReservedLayer, reserved_cache  # noqa: E402
from tests.llm_fixtures import build_tiny_chat_model  # noqa: E402


def states(*lengths: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(3, 2, n, 8, generator=gen), torch.randn(3, 2, n, 8, generator=gen)) for n in lengths]


@pytest.mark.parametrize("capacity", [0, 6, 64])
def test_reserved_layer_holds_what_a_dynamic_layer_holds(capacity: int) -> None:
    reserved, dynamic = ReservedLayer(capacity), DynamicLayer()
    for keys, values in states(5, 1, 1, 1, 4, 1):
        got, want = reserved.update(keys, values), dynamic.update(keys, values)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)
        assert reserved.get_seq_length() == dynamic.get_seq_length()


def test_reset_empties_the_layer_for_reuse() -> None:
    layer = ReservedLayer(4)
    for keys, values in states(6, 1):
        layer.update(keys, values)
    layer.reset()
    assert layer.get_seq_length() == 0
    keys, values = states(2, seed=1)[0]
    got_keys, got_values = layer.update(keys, values)
    assert torch.equal(got_keys, keys) and torch.equal(got_values, values)


def test_reserved_cache_keeps_special_layers(tmp_path: Path) -> None:
    from transformers import Qwen2Config

    config = Qwen2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        use_sliding_window=True,
        sliding_window=8,
        max_window_layers=1,
    )
    expected = [type(layer) for layer in DynamicCache(config=config).layers]
    got = [type(layer) for layer in reserved_cache(config, capacity=4).layers]
    assert [ReservedLayer if t is DynamicLayer else t for t in expected] == got
    assert ReservedLayer in got and any(t is not ReservedLayer for t in got)


@torch.inference_mode()
def test_a_model_decodes_the_same_logits_with_either_cache(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(build_tiny_chat_model(tmp_path / "m")), local_files_only=True)
    prompt = torch.randint(3, 300, (4, 12), generator=torch.Generator().manual_seed(0))
    logits = []
    for cache in (DynamicCache(config=model.config), reserved_cache(model.config, capacity=15)):
        out = model(input_ids=prompt, cache=cache, use_cache=True)
        steps = [out.logits[:, -1]]
        for _ in range(6):  # past the capacity: the layer grows once
            token = steps[-1].argmax(-1, keepdim=True)
            steps.append(model(input_ids=token, cache=cache, use_cache=True).logits[:, -1])
        logits.append(torch.stack(steps))
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=1e-6)


def test_the_engine_allocates_each_cache_once_when_continuing_a_cached_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eigenloop.contracts.v1 import common_pb2 as pb
    from eigenloop.inference.engine import TransformersEngine

    grown: list[int] = []
    real_grow = ReservedLayer._grow

    def counting(self: ReservedLayer, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        grown.append(capacity)
        real_grow(self, keys, values, capacity)

    monkeypatch.setattr(ReservedLayer, "_grow", counting)
    engine = TransformersEngine(build_tiny_chat_model(tmp_path / "m"), max_batch_size=1)
    try:
        prompt = list(range(5, 25))
        first = engine.generate(prompt, pb.SamplingParams(max_new_tokens=4), timeout_s=60)
        layers = len(grown)
        # The continuation reuses the cached prefix and encodes 30 new tokens, more than the 4 it generates.
        engine.generate([*prompt, *first.token_ids, *range(30, 60)], pb.SamplingParams(max_new_tokens=4), timeout_s=60)
    finally:
        engine.close()
    assert layers == 2 and len(grown) == 2 * layers  # one allocation per layer and batch
    # The cached prefix (the prompt and the 3 generated tokens that were fed), 31 to encode, 4 to generate.
    assert grown[layers:] == [23 + 31 + 4] * layers
