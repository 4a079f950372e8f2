"""A KV cache whose layers write into reserved room instead of growing by concatenation.

transformers' DynamicLayer concatenates every decode step's keys and values onto the cache, copying the whole
cache each step: O(length) per token, most of a small model's decode time at a batch of 100+ rows and a few
hundred tokens of history. A batch's final length is known when it starts (cached prefix + tokens to encode +
its longest max_new_tokens), so the room is reserved once and each step writes its token in place; the layer hands
attention views of the filled part, as DynamicLayer hands its tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A DynamicLayer with room for `capacity` tokens from its first update (twice as much if they run out)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.capacity = capacity
        self.length = 0
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self._keys is None or self._values is None or end > self._keys.shape[-2]:
            room = self.capacity if self._keys is None else 2 * self._keys.shape[-2]
            self._grow(key_states, value_states, max(end, room))
        assert self._keys is not None and self._values is not None
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        keys = key_states.new_empty((*key_states.shape[:2], capacity, key_states.shape[-1]))
        values = value_states.new_empty((*value_states.shape[:2], capacity, value_states.shape[-1]))
        if self._keys is not None and self._values is not None:
            keys[:, :, : self.length] = self._keys[:, :, : self.length]
            values[:, :, : self.length] = self._values[:, :, : self.length]
        self._keys, self._values = keys, values

    def reset(self) -> None:
        super().reset()
        self.length = 0
        self._keys = self._values = None


def reserved_cache(config: Any, capacity: int) -> DynamicCache:
    """transformers' cache for `config`, its plain full-attention layers replaced by ReservedLayers (sliding-window
    and other special layers stay as the library made them)."""
    cache = DynamicCache(config=config)
    cache.layers = [ReservedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
