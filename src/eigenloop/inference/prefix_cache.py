"""KV states of recently served sequences, found again by token prefix: prefix caching for multi-turn episodes.

An episode's next prompt is its previous prompt, the completion the engine sampled, then a template delta (tool
result or user message). Re-encoding the whole history every turn makes prefill the main cost of a rollout on a
CPU; with this cache the engine encodes only the delta. Keys are exact token sequences and entries belong to one
policy version: the engine clears the cache when weights change.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CachedPrefix:
    tokens: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    """Per layer, (kv heads, len(tokens), head dim)."""
    values: tuple[torch.Tensor, ...]

    def __len__(self) -> int:
        return len(self.tokens)


class PrefixCache:
    """At most `max_entries` sequences, least recently used evicted first. Not thread-safe (the batcher owns it)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, int], CachedPrefix] = OrderedDict()
        self._lengths: Counter[int] = Counter()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def longest_prefix(self, tokens: list[int]) -> CachedPrefix | None:
        """The longest cached sequence that is a proper prefix of `tokens` (at least one token is left to encode)."""
        for length in sorted((n for n in self._lengths if n < len(tokens)), reverse=True):
            head = tuple(tokens[:length])
            entry = self._entries.get((length, hash(head)))
            if entry is not None and entry.tokens == head:
                self._entries.move_to_end((length, hash(head)))
                self.hits += 1
                return entry
        self.misses += 1
        return None

    def store(self, entry: CachedPrefix) -> None:
        if self.max_entries < 1 or not entry.tokens:
            return
        key = (len(entry), hash(entry.tokens))
        if key not in self._entries:
            self._lengths[len(entry)] += 1
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            (length, _), _ = self._entries.popitem(last=False)
            self._lengths[length] -= 1
            if not self._lengths[length]:
                del self._lengths[length]

    def clear(self) -> None:
        self._entries.clear()
        self._lengths.clear()
