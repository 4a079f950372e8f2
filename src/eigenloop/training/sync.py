"""Weight sync: after each optimizer step the new weights go to every inference replica, tagged with the new
policy version (UpdateWeights: a header, then safetensors bytes in chunks; the replica swaps atomically).

Each replica gets its own channel: the load-balanced channel of `rpc.client.connect` would reach only one of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Protocol

import grpc
from safetensors.torch import save as save_safetensors

from eigenloop.contracts.v1 import inference_pb2 as ipb
from eigenloop.contracts.v1 import inference_pb2_grpc
from eigenloop.rpc.client import ServicePolicy, connect
from eigenloop.training.config import GRPOConfig, SyncConfig

POLICY = ServicePolicy("eigenloop.v1.Inference", unary_timeout_s=120.0)


class WeightSync(Protocol):
    def push(self, model: Any, version: int) -> None: ...

    def close(self) -> None: ...


class SyncError(RuntimeError):
    pass


def weights_blob(model: Any) -> bytes:
    """The model's tensors as safetensors bytes, tied aliases left out (the engine accepts them missing)."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.detach().cpu().contiguous()
    return save_safetensors(tensors)


def weight_chunks(blob: bytes, version: int, chunk_bytes: int) -> Iterator[ipb.WeightChunk]:
    header = ipb.WeightUpdateHeader(
        version=version, format="safetensors", total_bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest()
    )
    yield ipb.WeightChunk(header=header)
    for start in range(0, len(blob), chunk_bytes):
        yield ipb.WeightChunk(data=blob[start : start + chunk_bytes])


class InferenceSync:
    """Pushes weights to each listed inference replica in turn; any failure stops the run (stale replicas would
    keep sampling an old policy and the staleness filter would drop everything they produce)."""

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self._stubs = []
        for address in config.inference:
            channel = connect(address, POLICY, max_message_bytes=max(4 << 20, 2 * config.chunk_bytes))
            self._stubs.append((address, channel, inference_pb2_grpc.InferenceStub(channel)))

    def push(self, model: Any, version: int) -> None:
        blob = weights_blob(model)
        for address, _, stub in self._stubs:
            try:
                reply = stub.UpdateWeights(
                    weight_chunks(blob, version, self.config.chunk_bytes), timeout=self.config.timeout_s
                )
            except grpc.RpcError as err:
                raise SyncError(
                    f"weight update to inference {address} failed: {err.code().name}: {err.details()}"
                ) from None
            if reply.policy_version.version != version:
                raise SyncError(f"inference {address} serves version {reply.policy_version.version}, not {version}")

    def close(self) -> None:
        for _, channel, _ in self._stubs:
            channel.close()


class EngineSync:
    """Pushes weights into an inference engine in this process (embedded mode: no server in between)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def push(self, model: Any, version: int) -> None:
        self.engine.update_weights(weights_blob(model), version, checkpoint=f"trainer:{version}")

    def close(self) -> None:
        pass


def open_sync(config: GRPOConfig) -> WeightSync | None:
    """Sync to `sync.inference`; unset, to the replicas live rollouts sample from (every one of them)."""
    addresses = list(config.sync.inference)
    if not addresses and config.rollouts.source == "manager" and config.rollouts.inference:
        addresses = [a.strip() for a in config.rollouts.inference.split(",") if a.strip()]
    if not addresses:
        return None
    return InferenceSync(config.sync.model_copy(update={"inference": addresses}))
