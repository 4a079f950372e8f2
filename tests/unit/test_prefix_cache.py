"""Prefix caching in the inference engine: a multi-turn continuation encodes only its new tokens and generates what
an engine without the cache generates.

Tried: three-turn episodes, several at once in one batch (rows with a cached prefix next to rows without one, of
different lengths), greedy and seeded sampling; a weight update between turns (the old states must not be reused);
the cache's own bookkeeping (longest prefix wins, a proper prefix only, LRU eviction); a sliding-window model (its
layers keep only their window: no prefix is stored, and batches are served; before, storing one failed every batch).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save  # noqa: E402

from eigenloop.contracts.v1 import common_pb2 as pb  # noqa: E402
from eigenloop.inference.engine import Generation, TransformersEngine  # noqa: E402
from eigenloop.inference.prefix_cache import CachedPrefix, PrefixCache  # noqa: E402
from tests.llm_fixtures import build_tiny_chat_model  # noqa: E402

DELTAS = [[5, 17, 33, 9], [40, 41, 42, 43, 44, 45, 46], [7]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def engines(model_dir: Path) -> Iterator[tuple[TransformersEngine, TransformersEngine]]:
    cached = TransformersEngine(model_dir, max_batch_size=16, batch_window_ms=50)
    plain = TransformersEngine(model_dir, max_batch_size=16, batch_window_ms=50, prefix_cache_entries=0)
    yield cached, plain
    cached.close()
    plain.close()


def _episodes(
    engine: TransformersEngine, openings: list[list[int]], params: pb.SamplingParams
) -> list[list[Generation]]:
    """Each opening played for three turns, all episodes at once (their turns share batches)."""

    def play(opening: list[int]) -> list[Generation]:
        prompt, turns = list(opening), []
        for delta in DELTAS:
            generation = engine.generate(prompt, params, timeout_s=60)
            turns.append(generation)
            prompt = prompt + generation.token_ids + delta
        return turns

    with ThreadPoolExecutor(len(openings)) as pool:
        return list(pool.map(play, openings))


OPENINGS = [[11, 12, 13], list(range(20, 60)), [70, 71, 72, 73, 74, 75], list(range(100, 112))]


@pytest.mark.parametrize(
    "params", [pb.SamplingParams(max_new_tokens=6), pb.SamplingParams(temperature=1.0, max_new_tokens=6, seed=3)]
)
def test_continuations_generate_what_an_uncached_engine_generates(
    engines: tuple[TransformersEngine, TransformersEngine], params: pb.SamplingParams
) -> None:
    cached, plain = engines
    with_cache, without = _episodes(cached, OPENINGS, params), _episodes(plain, OPENINGS, params)
    for a_turns, b_turns in zip(with_cache, without, strict=True):
        for a, b in zip(a_turns, b_turns, strict=True):
            assert a.token_ids == b.token_ids
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    assert cached._prefix.hits >= len(OPENINGS) * (len(DELTAS) - 1)  # every later turn reused its history
    assert plain._prefix.hits == 0


def test_a_weight_update_empties_the_cache(engines: tuple[TransformersEngine, TransformersEngine]) -> None:
    cached, plain = engines
    params = pb.SamplingParams(max_new_tokens=6)
    first = cached.generate(OPENINGS[1], params)
    assert len(cached._prefix) > 0
    new_weights = {name: t * 1.5 for name, t in plain.model.state_dict().items()}
    for engine in (cached, plain):
        engine.update_weights(save(new_weights), version=1)
    assert len(cached._prefix) == 0
    follow_up = OPENINGS[1] + first.token_ids + DELTAS[0]
    a, b = cached.generate(follow_up, params), plain.generate(follow_up, params)
    assert a.token_ids == b.token_ids and a.policy_version == b.policy_version == 1


def _entry(tokens: list[int]) -> CachedPrefix:
    state = (torch.zeros(1, len(tokens), 2),)
    return CachedPrefix(tuple(tokens), state, state)


def test_cache_finds_the_longest_proper_prefix_and_evicts_the_least_recent() -> None:
    cache = PrefixCache(max_entries=2)
    cache.store(_entry([1, 2]))
    cache.store(_entry([1, 2, 3, 4]))
    found = cache.longest_prefix([1, 2, 3, 4, 5])
    assert found is not None and found.tokens == (1, 2, 3, 4)
    shorter = cache.longest_prefix([1, 2, 3, 4])  # an exact match leaves nothing to encode: the shorter one
    assert shorter is not None and shorter.tokens == (1, 2)
    assert cache.longest_prefix([9, 1, 2]) is None
    cache.store(_entry([7, 8, 9]))  # evicts [1, 2, 3, 4], used less recently than [1, 2]
    assert len(cache) == 2 and cache.longest_prefix([1, 2, 3, 4, 5]).tokens == (1, 2)  # type: ignore[union-attr]


def test_a_sliding_window_model_keeps_no_prefixes_and_serves_batches(model_dir: Path, tmp_path: Path) -> None:
    sliding = tmp_path / "sliding"
    shutil.copytree(model_dir, sliding)
    config = json.loads((sliding / "config.json").read_text())
    config.update(use_sliding_window=True, sliding_window=8, max_window_layers=1)
    config["layer_types"] = ["full_attention", "sliding_attention"]
    (sliding / "config.json").write_text(json.dumps(config))
    engine = TransformersEngine(sliding, max_batch_size=4, batch_window_ms=50)
    try:
        params = pb.SamplingParams(temperature=0.0, max_new_tokens=12)
        prompts = [[11, 12, 13], list(range(40, 60)), [7]]
        with ThreadPoolExecutor(len(prompts)) as pool:
            batched = list(pool.map(lambda p: engine.generate(p, params, timeout_s=60).token_ids, prompts))
        assert batched == [engine.generate(p, params, timeout_s=60).token_ids for p in prompts]
        assert len(engine._prefix) == 0
    finally:
        engine.close()
