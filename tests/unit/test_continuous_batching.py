"""Continuous batching in the inference engine: rows leave the batch when they finish and waiting requests join it
between decode steps, without changing what any request generates.

Tried: a short request next to a long one (the short one's result comes first); a request sent while a long row
runs (it joins and finishes first); staggered arrivals of prompts of different lengths, greedy and seeded sampling
(every result equals the same request run alone); a weight update while a row runs (the row finishes on the old
version, the swap waits for it, requests after it get the new version).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save  # noqa: E402

from eigenloop.contracts.v1 import common_pb2 as pb  # noqa: E402
from eigenloop.inference.engine import Generation, TransformersEngine  # noqa: E402
from tests.llm_fixtures import build_tiny_chat_model  # noqa: E402

LONG = 120


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def engine(model_dir: Path) -> Iterator[TransformersEngine]:
    engine = TransformersEngine(model_dir, max_batch_size=16, batch_window_ms=20)
    yield engine
    engine.close()


def _params(max_new: int, *, temperature: float = 0.0, seed: int | None = None) -> pb.SamplingParams:
    params = pb.SamplingParams(temperature=temperature, max_new_tokens=max_new)
    if seed is not None:
        params.seed = seed
    return params


def _long_prompt(engine: TransformersEngine) -> list[int]:
    """A prompt the tiny model continues for LONG tokens without stopping (checked, not assumed)."""
    forever = _params(LONG)
    for start in range(10, 200, 7):
        prompt = [start, start + 1, start + 2]
        if engine.generate(prompt, forever, timeout_s=120).finish_reason == "length":
            return prompt
    raise AssertionError("no prompt of the tiny model runs to max_new_tokens")


def _wait_running(future: Future[Generation], engine: TransformersEngine) -> None:
    """Until the batcher took the request (the queue is empty) and it has not finished."""
    deadline = time.monotonic() + 60
    while engine._pending and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not future.done()


def test_a_short_request_does_not_wait_for_a_long_one(engine: TransformersEngine) -> None:
    long_prompt = _long_prompt(engine)
    long = engine.submit(long_prompt, _params(LONG))
    short = engine.submit([3, 4, 5], _params(2))  # within the batch window: the same first batch
    assert len(short.result(timeout=60).token_ids) <= 2
    assert not long.done()  # the batch is still decoding the long row
    assert long.result(timeout=60).finish_reason == "length"


def test_a_request_sent_while_a_row_runs_joins_the_batch(engine: TransformersEngine) -> None:
    long_prompt = _long_prompt(engine)
    alone = engine.generate([9, 8, 7, 6], _params(3), timeout_s=60)
    long = engine.submit(long_prompt, _params(LONG))
    _wait_running(long, engine)
    joined = engine.submit([9, 8, 7, 6], _params(3)).result(timeout=60)
    assert not long.done()  # it finished inside the long row's batch, not after it
    assert joined.token_ids == alone.token_ids
    assert joined.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    long.result(timeout=60)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_staggered_arrivals_generate_what_each_request_generates_alone(
    engine: TransformersEngine, temperature: float
) -> None:
    rng = random.Random(7)
    prompts = [[rng.randrange(3, 250) for _ in range(rng.randint(1, 40))] for _ in range(24)]
    requests = [(p, _params(rng.randint(1, 30), temperature=temperature, seed=i)) for i, p in enumerate(prompts)]
    alone = [engine.generate(prompt, params, timeout_s=60) for prompt, params in requests]
    futures: list[Future[Generation]] = []

    def send() -> None:
        for prompt, params in requests:
            futures.append(engine.submit(prompt, params))
            time.sleep(rng.random() * 0.01)  # arrivals spread over many decode steps

    sender = threading.Thread(target=send)
    sender.start()
    sender.join(60)
    together = [f.result(timeout=60) for f in futures]
    for a, b in zip(alone, together, strict=True):
        assert a.token_ids == b.token_ids
        assert a.finish_reason == b.finish_reason
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_a_weight_update_waits_for_running_rows_and_later_requests_see_it(engine: TransformersEngine) -> None:
    long_prompt = _long_prompt(engine)
    blob = save({k: v.contiguous() for k, v in engine.model.state_dict().items()})
    long = engine.submit(long_prompt, _params(LONG))
    _wait_running(long, engine)
    updated: list[int] = []
    updater = threading.Thread(target=lambda: updated.append(engine.update_weights(blob, 1)))
    updater.start()
    updater.join(60)
    assert updated == [1]
    assert long.done() and long.result().policy_version == 0  # drained on the old weights before the swap
    assert engine.generate([3, 4, 5], _params(2), timeout_s=60).policy_version == 1
