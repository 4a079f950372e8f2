"""Data parallelism with torch.distributed, launched by torchrun (or a single plain process).

Every process holds the whole model (DDP; the models trained here are small). Each step's rows are split between
processes and each loss is normalised by the *global* number of targets, so the averaged gradients equal those of
one process training on the whole batch. Process 0 writes checkpoints and metrics and syncs inference weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def wrap(self, model: Any) -> Any:
        """The model as trained: DDP-wrapped when there are several processes."""
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def shard(self, n: int) -> range:
        """This process's share of `n` items (strided, so shares differ by at most one)."""
        return range(self.rank, n, self.world_size)

    def all_sum(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)  # nccl reduces CUDA tensors only
        dist.all_reduce(t)
        return float(t.item())

    def all_max(self, value: int) -> int:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def broadcast(self, obj: T) -> T:
        """Process 0's `obj` on every process (e.g. the rollout groups of a step)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init(device: str = "cpu") -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else a single-process context.

    gloo on CPU, nccl on CUDA; each CUDA process takes the GPU of its LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=torch.device(device))
    rank = int(os.environ["RANK"])
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group("nccl")
        return DistContext(rank, world, torch.device("cuda", local))
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return DistContext(rank, world, torch.device(device))


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()  # leave together: a process tearing gloo down while a peer still uses it can hang the exit
        dist.destroy_process_group()
