"""Near-duplicate detection: MinHash signatures over a task's dialogue text and over its action sequence.

Two tasks are near-duplicates when the estimated Jaccard similarity of *both* their dialogue word 3-grams
and their action tokens (tool name plus each argument) is at least the threshold: templated dialogues about
different entities share most of their words but not their actions, and the same actions can be asked for
in very different words. Candidates are found with LSH banding, then compared signature to signature.
A small implementation rather than `datasketch`, which would bring numpy and scipy into the core library.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field

from eigenloop.contracts.v1 import common_pb2 as pb

PERMUTATIONS = 64
BANDS = 16  # 16 bands of 4 rows: pairs above ~0.6 similarity almost always share a band
_PRIME = (1 << 61) - 1
_MASK = (1 << 32) - 1


def _coefficients() -> list[tuple[int, int]]:
    out = []
    for i in range(PERMUTATIONS):
        digest = hashlib.sha256(f"minhash:{i}".encode()).digest()
        out.append((int.from_bytes(digest[:8], "big") % _PRIME | 1, int.from_bytes(digest[8:16], "big") % _PRIME))
    return out


_COEFFICIENTS = _coefficients()


def _hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big")


def signature(tokens: set[str]) -> tuple[int, ...]:
    hashes = [_hash(t) for t in tokens] or [0]
    return tuple(min(((a * h + b) % _PRIME) & _MASK for h in hashes) for a, b in _COEFFICIENTS)


def similarity(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / PERMUTATIONS


def text_tokens(task: pb.Task) -> set[str]:
    words = re.findall(r"\w+", " ".join(m.content for m in task.reference_dialogue if m.role != pb.ROLE_TOOL).lower())
    return {" ".join(words[i : i + 3]) for i in range(max(len(words) - 2, 1))}


def action_tokens(task: pb.Task) -> set[str]:
    tokens = set()
    for position, call in enumerate(task.checker.gold_actions):
        tokens.add(f"{position}:{call.name}")
        try:
            arguments = json.loads(call.arguments_json or "{}")
        except json.JSONDecodeError:
            arguments = {}
        for key, value in sorted(arguments.items()) if isinstance(arguments, dict) else []:
            tokens.add(f"{call.name}.{key}={json.dumps(value, sort_keys=True)}")
    return tokens


@dataclass(frozen=True)
class Fingerprint:
    task_id: str
    text: tuple[int, ...]
    actions: tuple[int, ...]

    @classmethod
    def of(cls, task: pb.Task) -> Fingerprint:
        return cls(task.id, signature(text_tokens(task)), signature(action_tokens(task)))


@dataclass
class NearDuplicateIndex:
    threshold: float = 0.8
    _fingerprints: list[Fingerprint] = field(default_factory=list)
    _bands: dict[tuple[int, tuple[int, ...]], list[int]] = field(default_factory=lambda: defaultdict(list))

    def __len__(self) -> int:
        return len(self._fingerprints)

    def nearest(self, fingerprint: Fingerprint) -> tuple[str, float] | None:
        """The indexed task most similar to `fingerprint` at or above the threshold (similarity = the lower of
        text and action similarity), or None."""
        best: tuple[str, float] | None = None
        for position in self._candidates(fingerprint):
            score = self._similarity(fingerprint, position)
            if score >= self.threshold and (best is None or score > best[1]):
                best = (self._fingerprints[position].task_id, score)
        return best

    def nearest_similarity(self, fingerprint: Fingerprint) -> float:
        """The highest similarity to an indexed task sharing an LSH band with it (0.0 when none does)."""
        return max((self._similarity(fingerprint, p) for p in self._candidates(fingerprint)), default=0.0)

    def _candidates(self, fingerprint: Fingerprint) -> list[int]:
        return sorted({p for key in _band_keys(fingerprint) for p in self._bands.get(key, ())})

    def _similarity(self, fingerprint: Fingerprint, position: int) -> float:
        other = self._fingerprints[position]
        return min(similarity(fingerprint.text, other.text), similarity(fingerprint.actions, other.actions))

    def add(self, fingerprint: Fingerprint) -> None:
        position = len(self._fingerprints)
        self._fingerprints.append(fingerprint)
        for key in _band_keys(fingerprint):
            self._bands[key].append(position)


def _band_keys(fingerprint: Fingerprint) -> list[tuple[int, tuple[int, ...]]]:
    rows = PERMUTATIONS // BANDS
    # Banded on the action signature: the stricter of the two (dialogue templates make texts alike).
    return [(band, fingerprint.actions[band * rows : (band + 1) * rows]) for band in range(BANDS)]
