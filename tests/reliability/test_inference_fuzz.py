"""Fuzzing every inference RPC against one real inference process serving a tiny random model: a clear status for
every case, no crash, no hang, the server healthy afterwards and still generating with its original weights.

Tried: Generate with random prompts (empty, out-of-vocabulary, negative, longer than the context) and random
sampling parameters (NaN, infinite, negative, huge max_new_tokens, unknown stop ids), streams abandoned after the
first response; UpdateWeights with random chunk sequences (no header, two headers, data first, wrong sizes,
wrong or malformed sha256, unknown formats, random bytes as weights); GetModelInfo with random bytes; valid
messages with random byte edits and invalid UTF-8 for each; GenerateMany frames of keyed random requests (repeated
keys, closes) with a random, mutated or undecodable frame among them.
"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import inference_pb2 as ipb
from eigenloop.contracts.v1 import inference_pb2_grpc
from tests.reliability.conftest import INFERENCE_CONTEXT, Trials
from tests.reliability.fuzzing import CLEAR, assert_alive, fuzz_settings, record_multiplexed
from tests.reliability.protofuzz import (
    garbage_frames,
    invalid_utf8,
    keyed_frame,
    messages,
    multiplexed_call,
    mutated,
    raw_call,
)
from tests.support import ServiceProcess

pytest.importorskip("torch")
pytest.importorskip("transformers")


SERVICE = "/eigenloop.v1.Inference/"
PROMPT = [5, 17, 30]
TOKEN_IDS = st.lists(st.integers(0, 420) | st.integers(-(2**31), 2**31 - 1), max_size=INFERENCE_CONTEXT + 4)
OVERRIDES = {
    "prompt_token_ids": TOKEN_IDS,
    "stop_token_ids": st.lists(st.integers(-5, 500), max_size=3),
    "max_new_tokens": st.integers(0, 8) | st.integers(-(2**31), 2**31 - 1),
    "sha256": st.text(alphabet="0123456789abcdefABCDEF", min_size=63, max_size=65) | st.text(max_size=70),
    "total_bytes": st.integers(1, 64) | st.integers(-(2**63), 2**63 - 1),
    "format": st.sampled_from(["safetensors", "", "pickle"]),
}
GENERATE = messages(ipb.GenerateRequest, OVERRIDES)
CHUNKS = messages(ipb.WeightChunk, OVERRIDES)


def generate(channel: grpc.Channel) -> list[int]:
    stub = inference_pb2_grpc.InferenceStub(channel)
    request = ipb.GenerateRequest(prompt_token_ids=PROMPT, sampling=pb.SamplingParams(max_new_tokens=4))
    return [t for response in stub.Generate(request, timeout=30) for t in response.token_ids]


def test_generate(inference: ServiceProcess, trials: Trials) -> None:
    cases = st.one_of(
        *[GENERATE.map(lambda m: ("random request", m.SerializeToString()))] * 3,
        mutated(GENERATE).map(lambda b: ("mutated bytes", b)),
        invalid_utf8(ipb.GenerateRequest, GENERATE).map(lambda b: ("invalid UTF-8", b)),
        st.binary(max_size=200).map(lambda b: ("random bytes", b)),
    )

    @fuzz_settings(400)
    @given(case=cases, abandon=st.booleans())
    def run(case: tuple[str, bytes], abandon: bool) -> None:
        kind, data = case
        read = 1 if abandon else None
        code = raw_call(channel, SERVICE + "Generate", [data], client_streaming=False, server_streaming=True, read=read)
        trials.record("fuzz: inference", f"Generate: {kind}" + (", abandoned" if abandon else ""), code)
        assert code in CLEAR | {"CANCELLED_BY_CLIENT"}

    with grpc.insecure_channel(inference.address) as channel:
        before = generate(channel)
        run()
        assert generate(channel) == before  # greedy, same weights: the same tokens
    assert_alive(inference)


def test_generate_many(inference: ServiceProcess, trials: Trials) -> None:
    """Frames of keyed random requests (repeated keys and closes included), and a garbage frame among them."""
    keyed = st.tuples(st.integers(0, 5), st.one_of(GENERATE, GENERATE, st.none()))

    @fuzz_settings(150)
    @given(
        frames=st.lists(st.lists(keyed, max_size=4), max_size=3),
        garbage=st.none() | garbage_frames(ipb.GenerateFrame, OVERRIDES),
    )
    def run(frames: list[list[tuple[int, ipb.GenerateRequest | None]]], garbage: bytes | None) -> None:
        wire = [keyed_frame(ipb.GenerateFrame, items) for items in frames]
        code, keys = multiplexed_call(channel, SERVICE + "GenerateMany", wire, ipb.GenerateResultFrame, garbage, 30)
        what = f"fuzzed frames{', one garbage frame' if garbage else ''}"
        record_multiplexed(trials, "fuzz: inference", "GenerateMany", what, code, keys)

    with grpc.insecure_channel(inference.address) as channel:
        before = generate(channel)
        run()
        assert generate(channel) == before
    assert_alive(inference)


def test_update_weights(inference: ServiceProcess, trials: Trials) -> None:
    wire = st.one_of(*[CHUNKS.map(lambda m: m.SerializeToString())] * 4, mutated(CHUNKS), invalid_utf8(ipb.WeightChunk))

    @fuzz_settings(400)
    @given(chunks=st.lists(wire, max_size=5))
    def run(chunks: list[bytes]) -> None:
        code = raw_call(channel, SERVICE + "UpdateWeights", chunks, client_streaming=True, server_streaming=False)
        trials.record("fuzz: inference", "UpdateWeights: fuzzed chunk sequence", code)
        assert code in CLEAR - {"OK"}  # random bytes never are a valid set of weights with a matching sha256

    with grpc.insecure_channel(inference.address) as channel:
        before = generate(channel)
        run()
        assert generate(channel) == before  # every update was refused: the original weights still serve
    assert_alive(inference)


def test_get_model_info(inference: ServiceProcess, trials: Trials) -> None:
    @fuzz_settings(100)
    @given(data=st.binary(max_size=100))
    def run(data: bytes) -> None:
        code = raw_call(channel, SERVICE + "GetModelInfo", [data], client_streaming=False, server_streaming=False)
        trials.record("fuzz: inference", "GetModelInfo: random bytes", code)
        assert code in CLEAR

    with grpc.insecure_channel(inference.address) as channel:
        run()
    assert_alive(inference)
