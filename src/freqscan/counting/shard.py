"""Read one shard into sample rows: the runtime-agnostic first stage of a count.

Reads every sample, skips and counts unusable ones (per reason), searches the captions for
concepts and, when images are tagged, decodes and resizes each image. It yields the shard's
sample rows in chunks (schema :data:`SAMPLE_ROWS`), then one last row carrying the shard's
outcome. The rows of a shard are counted only once its outcome and every row it announces have
arrived (:mod:`freqscan.counting.assemble`); a shard that cannot be read to its end reports
``failed`` and every row it yielded is discarded, so no shard is ever half counted.

A read that fails transiently (the object briefly missing, a store error) is retried from the
shard's start after a backoff, unless the object changed since it was listed. A retry yields
only rows whose key no earlier read yielded and accounts for the samples afresh, so a shard read
in several attempts yields and counts exactly what one undisturbed read would.

Every counted sample's caption keys are kept too (also afresh per read) and, once the shard's
last read succeeded, written as one file (schema :data:`~freqscan.tables.schemas.CAPTION_KEYS`)
announced in the outcome, so that concepts added later are counted without parsing again. The
outcome also summarises those keys (:mod:`freqscan.counting.duplicates`), so that the driver finds
shards holding another shard's samples.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from freqscan.config import SourceConfig
from freqscan.counting.duplicates import KeySummary, keys_identify_samples
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
from freqscan.sources.files import changed_since_listing
from freqscan.tables.schemas import CAPTION_KEYS, HITS
from freqscan.tables.store import DataFile
from freqscan.text.keys import CaptionKeys, has_html

# Samples per yielded chunk. Text-only rows are small; image rows carry size*size*3 bytes each
# (442 kB at 384 px), so 128 of them make a ~57 MB block, under Ray Data's 128 MB target.
TEXT_CHUNK = 2048
IMAGE_CHUNK = 128

# Retry delays double from the configured backoff up to this many seconds.
MAX_BACKOFF_S = 30.0
# Each delay is shortened by up to this fraction at random, so that the workers of a store
# outage do not all retry at the same moment.
BACKOFF_JITTER = 0.1

# Samples -> per sample, the sorted concept ids its caption counts for and the caption's keys:
# TextSearcher.search_samples parses the captions, StoredKeysSearch looks up stored keys.
Search = Callable[[Sequence[Sample]], list[tuple[list[int], CaptionKeys]]]
# Writes a shard's caption keys (schema CAPTION_KEYS) where the driver can commit them.
WriteKeys = Callable[[pa.Table], DataFile]

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
        read_attempts: Reads of the shard made (more than 1 after transient failures).
        caption_keys: The shard's caption keys file, written by the reader; ``None`` when it
            failed or its reader keeps no keys.
        key_summary: Summary of its counted sample keys; ``None`` when it failed, counted no
            sample, its keys are row indices, or it was counted before summaries were kept.
    """

    shard: str
    status: str = SHARD_OK
    rows: int = 0
    stats: ShardStats = field(default_factory=ShardStats)
    images_decoded: int = 0
    images_skipped: Counter[str] = field(default_factory=Counter)
    error_reason: str | None = None
    error: str | None = None
    read_attempts: int = 1
    caption_keys: DataFile | None = None
    key_summary: KeySummary | None = None

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
                "read_attempts": self.read_attempts,
                "caption_keys": asdict(self.caption_keys) if self.caption_keys else None,
                "key_summary": self.key_summary.to_dict() if self.key_summary else None,
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
            d["read_attempts"],
            DataFile(**d["caption_keys"]) if d.get("caption_keys") else None,
            KeySummary.from_dict(d["key_summary"]) if d.get("key_summary") else None,
        )


def read_shard_rows(
    shard: ShardInfo,
    source: SourceConfig,
    search: Search,
    image: ImageInput | None = None,
    retries: int = 3,
    backoff_s: float = 1.0,
    sleep: Callable[[float], object] = time.sleep,
    write_keys: WriteKeys | None = None,
) -> Iterator[pa.Table]:
    """Yield a shard's sample rows in chunks, then its outcome row.

    Without ``image`` only samples with at least one text concept are yielded (nothing else can
    count); with it every usable sample with a caption hit or a decodable image is.

    Args:
        shard: The shard to read, with the fingerprint it was listed with.
        source: How to read it.
        search: Maps a list of samples to the sorted concept ids each one's caption counts for,
            and the caption's keys.
        image: The tagger's preprocessing, or ``None`` when the run tags no images.
        retries: Reads after the first one when a read fails transiently
            (:data:`freqscan.records.TRANSIENT_READ_REASONS`); 0 retries nothing.
        backoff_s: Seconds before the first retry, doubling per retry (at most
            :data:`MAX_BACKOFF_S`, shortened by up to :data:`BACKOFF_JITTER` at random).
        sleep: Waits the given seconds (tests record the delays instead).
        write_keys: Writes the caption keys of every counted sample once the shard was read to
            its end; its file goes into the outcome. ``None`` keeps no keys.
    """
    outcome = ShardOutcome(shard.path)
    yielded: set[str] = set()  # keys of the rows yielded by every read so far
    keys: list[pa.Table] = []  # caption keys of the current read's counted samples
    for attempt in itertools.count(1):
        outcome.read_attempts = attempt
        error = yield from _read_once(shard, source, search, image, outcome, yielded, keys)
        if error is None or not error.transient:
            break
        if attempt > retries:
            error = ShardReadError(
                error.reason, f"{error.message} (gave up after {_attempts(attempt)})"
            )
            break
        sleep(_retry_delay(attempt, backoff_s))
        # Rows already yielded came from the listed object; a changed one would mix versions.
        if changed := changed_since_listing(shard):
            error = ShardReadError(
                "changed_during_read",
                f"{shard.path}: changed since it was listed ({changed}) after "
                f"{_attempts(attempt)} failed with {error.reason}; a new run counts its new "
                "content",
            )
            break
    if error is not None:
        outcome.status = SHARD_FAILED
        outcome.error_reason, outcome.error = error.reason, error.message
    else:
        counted = pa.concat_tables([CAPTION_KEYS.empty_table(), *keys])
        if write_keys is not None:
            outcome.caption_keys = write_keys(counted)
        if keys_identify_samples(source):
            outcome.key_summary = KeySummary.of(counted.column("key").to_pylist())
    outcome.rows = len(yielded)
    yield pa.Table.from_pylist(
        [{"shard": shard.path, "outcome": outcome.to_json()}], schema=SAMPLE_ROWS
    )


def _read_once(
    shard: ShardInfo,
    source: SourceConfig,
    search: Search,
    image: ImageInput | None,
    outcome: ShardOutcome,
    yielded: set[str],
    keys: list[pa.Table],
) -> Generator[pa.Table, None, ShardReadError | None]:
    """Read the shard from its start, yielding rows whose key is not in ``yielded`` yet.

    Collects every counted sample's caption keys into ``keys``. Returns the error that ended the
    read early, else ``None``.
    """
    # Every read sees the shard's samples from the first one: its accounting (and its caption
    # keys) starts over.
    outcome.stats, outcome.images_decoded, outcome.images_skipped = ShardStats(), 0, Counter()
    keys.clear()
    samples = _usable(read_shard(shard, source, images=image is not None), outcome.stats)
    chunk_size = TEXT_CHUNK if image is None else IMAGE_CHUNK
    try:
        while chunk := list(itertools.islice(samples, chunk_size)):
            table = _chunk_rows(shard.path, chunk, search, image, outcome, yielded, keys)
            if table.num_rows:
                yield table
    except ShardReadError as exc:
        return exc
    return None


def _retry_delay(retry: int, backoff_s: float) -> float:
    """Seconds to wait before retry number ``retry`` (1-based)."""
    # The exponent's bound only keeps the float finite for absurd retry counts.
    delay = min(MAX_BACKOFF_S, backoff_s * 2.0 ** min(retry - 1, 1000))
    return delay * (1 - BACKOFF_JITTER * random.random())


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _chunk_rows(
    shard: str,
    chunk: list[Sample],
    search: Search,
    image: ImageInput | None,
    outcome: ShardOutcome,
    yielded: set[str],
    keys: list[pa.Table],
) -> pa.Table:
    """Rows of a chunk's samples with a hit, leaving out (and adding to) ``yielded`` keys.

    Appends the caption keys of every sample of the chunk to ``keys``.
    """
    from freqscan.image.preprocess import decode_image  # PIL only where images are read

    found = search(chunk)
    keys.append(_keys_table(shard, chunk, [k for _, k in found]))
    rows = []
    for sample, (ids, _) in zip(chunk, found, strict=True):
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
        if (not ids and pixels is None) or sample.key in yielded:
            continue
        yielded.add(sample.key)
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


def _keys_table(shard: str, chunk: list[Sample], keys: list[CaptionKeys]) -> pa.Table:
    # Sorted: a set's order changes from process to process, the file must not.
    return pa.table(
        {
            "shard": [shard] * len(chunk),
            "key": [s.key for s in chunk],
            "nouns": [sorted(k.nouns) for k in keys],
            "words": [sorted(k.words) for k in keys],
        },
        schema=CAPTION_KEYS,
    )


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
