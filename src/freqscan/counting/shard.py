"""Count one shard: the runtime-agnostic unit of work.

Reads every sample of the shard, skips and counts unusable ones (per reason), searches the
captions for concepts and returns the shard's partial counts and hits. A shard that cannot be
read to its end contributes nothing and is reported as failed with its reason, so a retry or a
later recount redoes it whole; no shard is ever half counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from freqscan.config import SourceConfig
from freqscan.records import (
    SHARD_FAILED,
    SHARD_OK,
    SKIP_DUPLICATE_KEY,
    Sample,
    ShardInfo,
    ShardReadError,
    ShardStats,
)
from freqscan.sources import read_shard
from freqscan.tables.schemas import HITS
from freqscan.text.keys import has_html

# Captions are searched in chunks so a worker's memory stays flat whatever the shard size.
SEARCH_CHUNK = 2048

Search = Callable[[Sequence[str]], list[list[int]]]


@dataclass
class ShardResult:
    """What counting one shard produced.

    Args:
        shard: The shard.
        status: ``ok`` or ``failed``.
        stats: Sample accounting (for a failed shard: what was read before the failure).
        concept_counts: concept id -> captions of this shard that count for it.
        hits: One row per sample with at least one concept (schema ``HITS`` without run_id).
        error_reason: Short reason of a failure (``truncated_tar``...), else ``None``.
        error: The failure's message, else ``None``.
    """

    shard: ShardInfo
    status: str
    stats: ShardStats
    concept_counts: Counter[int] = field(default_factory=Counter)
    hits: pa.Table | None = None
    error_reason: str | None = None
    error: str | None = None

    @property
    def text_hits(self) -> int:
        return sum(self.concept_counts.values())


def count_shard(shard: ShardInfo, source: SourceConfig, search: Search) -> ShardResult:
    """Count one shard.

    Args:
        shard: The shard to read.
        source: How to read it.
        search: Maps a list of captions to the sorted concept ids each one counts for.
    """
    stats = ShardStats()
    try:
        samples = _usable_samples(read_shard(shard, source), stats)
    except ShardReadError as exc:
        return ShardResult(shard, SHARD_FAILED, stats, error_reason=exc.reason, error=exc.message)

    counts: Counter[int] = Counter()
    rows: dict[str, list] = {name: [] for name in HITS.names if name != "run_id"}
    for start in range(0, len(samples), SEARCH_CHUNK):
        chunk = samples[start : start + SEARCH_CHUNK]
        for sample, ids in zip(chunk, search([s.caption for s in chunk]), strict=True):
            if not ids:
                continue
            counts.update(ids)
            rows["shard"].append(shard.path)
            rows["key"].append(sample.key)
            rows["url"].append(sample.url)
            rows["caption"].append(sample.caption)
            rows["metadata"].append(sample.metadata)
            rows["text_concept_ids"].append(ids)
    hits = pa.table(rows, schema=pa.schema([f for f in HITS if f.name != "run_id"]))
    return ShardResult(shard, SHARD_OK, stats, counts, hits)


def _usable_samples(samples: Iterable[Sample], stats: ShardStats) -> list[Sample]:
    """Drain the reader, counting every sample; raises the reader's ShardReadError."""
    seen: set[str] = set()
    usable: list[Sample] = []
    for sample in samples:
        stats.samples_read += 1
        skip = sample.skip
        if skip is None and sample.key in seen:
            skip = SKIP_DUPLICATE_KEY
        seen.add(sample.key)
        if skip is not None:
            stats.skipped[skip] += 1
            continue
        if has_html(sample.caption):
            stats.html_captions += 1
        usable.append(sample)
    stats.samples_counted = len(usable)
    return usable
