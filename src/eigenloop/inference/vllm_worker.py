"""Runs inside vLLM's worker processes: the weight-loading half of `VLLMEngine.update_weights`.

vLLM mixes this class into its GPU worker class when the engine is built with
`worker_extension_cls="eigenloop.inference.vllm_worker.WeightUpdateExtension"`, and the engine calls its methods on
every worker (each tensor-parallel rank) with `LLM.collective_rpc("eigenloop_load_weights", args=(path,))`. vLLM
refuses a mixin whose attribute names collide with the worker's, hence the `eigenloop_` prefix.

Only a file path crosses the process boundary: collective_rpc is meant for control messages, and a multi-GB blob
through it would be serialized once per worker. Each worker streams the tensors from the file one at a time into the
model's own `load_weights`, which shards them for its tensor-parallel rank and fuses q/k/v and gate/up projections
as it does when loading a checkpoint, copying into the existing parameters (CUDA graphs stay valid).
"""

from __future__ import annotations

from typing import Any

from safetensors import safe_open

LOAD_WEIGHTS = "eigenloop_load_weights"
QUALNAME = f"{__name__}.WeightUpdateExtension"


class WeightUpdateExtension:
    model_runner: Any
    """vLLM's GPU model runner: an attribute of the worker class this is mixed into."""

    def eigenloop_load_weights(self, path: str) -> int:
        """Load every tensor of the safetensors file at `path` into the served model; returns how many."""
        model = self.model_runner.get_model()
        with safe_open(path, framework="pt", device="cpu") as blob:
            names = list(blob.keys())
            model.load_weights(weights=((name, blob.get_tensor(name)) for name in names))
        return len(names)
