"""Shards that hold the same samples: per-shard key summaries, compared once per run.

A duplicated or re-uploaded shard counts its samples twice. Within a shard a repeated key is
skipped (``duplicate_key``); across shards the driver cannot hold every key of a
billion-sample dataset, so each reader summarises its shard's counted keys in a fixed size:

- ``digest``: the sum, modulo 2**128, of every key's 128-bit hash. It does not depend on the
  keys' order, so two shards have equal digests exactly when they hold the same keys (barring a
  128-bit collision): a copy of a shard is always caught.
- ``sketch``: the :data:`SKETCH_SIZE` smallest 64-bit key hashes (a bottom-k sketch). A value in
  two shards' sketches is a key both hold (barring a hash collision: about 1 in 70,000 over
  LAION-400M's 1.3 million sketch values, which lie in the lowest 32/10,000 of the hash range),
  so a reported overlap is real; a small overlap can go unnoticed. Two shards sharing a
  fraction f of their keys share a sketch value with probability at least
  ``1 - (1 - f / (2 - f)) ** SKETCH_SIZE`` (95% from f = 0.17); simulated on shards of 2,000
  keys: 40% at f = 0.02, 75% at 0.05, 96% at 0.1.

Key ranges (min, max) are not used: they find overlaps only where keys are sorted by shard, as
img2dataset's are, and flag every pair of shards where keys are hashes or ids.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from freqscan.config import SourceConfig

# Values per shard's sketch: 256 bytes in its `shards` row; comparing LAION-400M's 41,455 shards
# takes the driver about 64 MB and half a second at commit (measured).
SKETCH_SIZE = 32
# Messages name this many duplicate shards; `runs.duplicate_shards` lists them all.
NAMED_IN_MESSAGES = 5

_DIGEST_MODULUS = 2**128


@dataclass(frozen=True)
class KeySummary:
    """A fixed-size summary of one shard's counted sample keys (see the module docstring).

    Args:
        digest: The order-independent digest of the keys, 32 hex digits.
        sketch: The smallest 64-bit key hashes (signed, to fit an int64 column), ascending.
    """

    digest: str
    sketch: tuple[int, ...]

    @classmethod
    def of(cls, keys: Iterable[str]) -> KeySummary | None:
        """The summary of distinct keys; ``None`` for none (an empty shard duplicates nothing)."""
        total, hashes = 0, []
        for key in keys:
            # surrogatepass: tar member names may hold undecodable bytes as lone surrogates.
            h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            total += int.from_bytes(h, "big")
            hashes.append(int.from_bytes(h[:8], "big", signed=True))
        if not hashes:
            return None
        return cls(f"{total % _DIGEST_MODULUS:032x}", tuple(heapq.nsmallest(SKETCH_SIZE, hashes)))

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "sketch": list(self.sketch)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeySummary:
        return cls(d["digest"], tuple(d["sketch"]))


@dataclass(frozen=True)
class DuplicateShard:
    """A shard that holds counted sample keys of a shard listed before it.

    Args:
        shard: The shard's path.
        duplicates_of: The earlier shard: the first one with the same keys, else one sharing
            some of them.
        same_keys: Both hold exactly the same keys (a copy); else they share some.
    """

    shard: str
    duplicates_of: str
    same_keys: bool

    def __str__(self) -> str:
        how = "has the same keys as" if self.same_keys else "shares keys with"
        return f"{self.shard} {how} {self.duplicates_of}"


def keys_identify_samples(source: SourceConfig) -> bool:
    """Whether sample keys tell samples apart across shards: webdataset keys and a parquet key
    column do; row indices (parquet without ``key_column``) repeat in every shard."""
    return source.format == "webdataset" or source.key_column is not None


def find_duplicate_shards(
    shards: Sequence[tuple[str, KeySummary | None]],
) -> list[DuplicateShard]:
    """The shards holding keys of a shard before them in ``shards``, in that order.

    Args:
        shards: Path and key summary of every counted shard, in listing order; a shard without
            a summary (none kept, or no keys) is not compared.
    """
    by_digest: dict[str, str] = {}
    by_hash: dict[int, str] = {}
    found = []
    for path, summary in shards:
        if summary is None:
            continue
        same = by_digest.setdefault(summary.digest, path)
        shared = next((by_hash[h] for h in summary.sketch if by_hash.get(h, path) != path), None)
        if same != path:
            found.append(DuplicateShard(path, same, same_keys=True))
        elif shared is not None:
            found.append(DuplicateShard(path, shared, same_keys=False))
        for h in summary.sketch:
            by_hash.setdefault(h, path)
    return found


def describe(duplicates: Sequence[DuplicateShard]) -> str:
    """The first :data:`NAMED_IN_MESSAGES` duplicate shards in one line."""
    named = "; ".join(map(str, duplicates[:NAMED_IN_MESSAGES]))
    more = len(duplicates) - NAMED_IN_MESSAGES
    return f"{named}; and {more:,} more (runs.duplicate_shards)" if more > 0 else named
