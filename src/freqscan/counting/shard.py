"""Read one shard into sample rows: the runtime-agnostic first stage of a count.

Reads every sample, skips and counts unusable ones (per reason), searches the captions for
concepts and, when images are tagged, decodes and resizes each image. It yields the shard's
sample rows in chunks (schema :data:`SAMPLE_ROWS`), then one last row carrying the shard's
outcome. The rows of a shard are counted only once its outcome and every row it announces have
arrived (:mod:`freqscan.counting.assemble`); a shard that cannot be read to its end reports
``failed`` and every row it yielded is discarded, so no shard is ever half counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import pyarrow as pa

from freqscan.config import SourceConfig
from freqscan.image.input import ImageInput
from freqscan.records import (
    IMAGE_MISSING,
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

# Samples per yielded chunk. Text-only rows are small; image rows carry size*size*3 bytes each
# (442 kB at 384 px), so 128 of them make a ~57 MB block, under Ray Data's 128 MB target.
TEXT_CHUNK = 2048
IMAGE_CHUNK = 128

Search = Callable[[Sequence[str]], list[list[int]]]

# What the first stage yields. `image` holds the resized uint8 pixels (None: no usable image);
# the tagging stage replaces it by `image_concept_ids` / `image_scores` (scores >= the floor).
# The shard's last row has only `shard` and `outcome` (JSON, see ShardOutcome) set.
SAMPLE_ROWS = pa.schema(
    [f for f in HITS if f.name != "run_id"] + [("image", pa.binary()), ("outcome", pa.string())]
)


@dataclass
class ShardOutcome:
    """How reading one shard went.

    Args:
        shard: The shard's path.
        status: ``ok`` or ``failed``.
        rows: Sample rows yielded for this shard (the assembler waits for all of them).
        stats: Sample accounting (for a failed shard: what was read before the failure).
        images_decoded: Images decoded and resized for tagging.
        images_skipped: Image-level skip reason -> samples.
        error_reason: Short reason of a failure (``truncated_tar``...), else ``None``.
        error: The failure's message, else ``None``.
    """

    shard: str
    status: str = SHARD_OK
    rows: int = 0
    stats: ShardStats = field(default_factory=ShardStats)
    images_decoded: int = 0
    images_skipped: Counter[str] = field(default_factory=Counter)
    error_reason: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "shard": self.shard,
                "status": self.status,
                "rows": self.rows,
                "samples_read": self.stats.samples_read,
                "samples_counted": self.stats.samples_counted,
                "html_captions": self.stats.html_captions,
                "skipped": dict(sorted(self.stats.skipped.items())),
                "images_decoded": self.images_decoded,
                "images_skipped": dict(sorted(self.images_skipped.items())),
                "error_reason": self.error_reason,
                "error": self.error,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ShardOutcome:
        d: dict[str, Any] = json.loads(text)
        stats = ShardStats(
            d["samples_read"], d["samples_counted"], d["html_captions"], Counter(d["skipped"])
        )
        return cls(
            d["shard"],
            d["status"],
            d["rows"],
            stats,
            d["images_decoded"],
            Counter(d["images_skipped"]),
            d["error_reason"],
            d["error"],
        )


def read_shard_rows(
    shard: ShardInfo,
    source: SourceConfig,
    search: Search,
    image: ImageInput | None = None,
) -> Iterator[pa.Table]:
    """Yield a shard's sample rows in chunks, then its outcome row.

    Without ``image`` only samples with at least one text concept are yielded (nothing else can
    count); with it every usable sample with a caption hit or a decodable image is.

    Args:
        shard: The shard to read.
        source: How to read it.
        search: Maps a list of captions to the sorted concept ids each one counts for.
        image: The tagger's preprocessing, or ``None`` when the run tags no images.
    """
    outcome = ShardOutcome(shard.path)
    samples = _usable(read_shard(shard, source, images=image is not None), outcome.stats)
    chunk_size = TEXT_CHUNK if image is None else IMAGE_CHUNK
    try:
        while chunk := list(islice(samples, chunk_size)):
            table = _chunk_rows(shard.path, chunk, search, image, outcome)
            outcome.rows += table.num_rows
            if table.num_rows:
                yield table
    except ShardReadError as exc:
        outcome.status, outcome.error_reason, outcome.error = SHARD_FAILED, exc.reason, exc.message
    yield pa.Table.from_pylist(
        [{"shard": shard.path, "outcome": outcome.to_json()}], schema=SAMPLE_ROWS
    )


def _chunk_rows(
    shard: str,
    chunk: list[Sample],
    search: Search,
    image: ImageInput | None,
    outcome: ShardOutcome,
) -> pa.Table:
    from freqscan.image.preprocess import decode_image  # PIL only where images are read

    rows = []
    for sample, ids in zip(chunk, search([s.caption for s in chunk]), strict=True):
        pixels = None
        if image is not None:
            if sample.image is None:
                outcome.images_skipped[IMAGE_MISSING] += 1
            else:
                decoded, reason = decode_image(sample.image, image)
                if decoded is None:
                    outcome.images_skipped[reason] += 1
                else:
                    outcome.images_decoded += 1
                    pixels = decoded.tobytes()
        if not ids and pixels is None:
            continue
        rows.append(
            {
                "shard": shard,
                "key": sample.key,
                "url": sample.url,
                "caption": sample.caption,
                "metadata": sample.metadata,
                "text_concept_ids": ids,
                "image": pixels,
            }
        )
    return pa.Table.from_pylist(rows, schema=SAMPLE_ROWS)


def _usable(samples: Iterable[Sample], stats: ShardStats) -> Iterator[Sample]:
    """Pass usable samples on, counting every sample; the reader's ShardReadError propagates."""
    seen: set[str] = set()
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
        stats.samples_counted += 1
        yield sample
