"""The values that flow between pipeline stages: shards, samples, per-shard stats.

Every sample a reader yields is either usable (``skip is None``) or carries the reason it was
skipped, so a shard's numbers always add up: ``samples_read == samples_counted + sum(skipped)``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

# Sample-level skip reasons. Each is a key of ShardStats.skipped and of the `shards` table's
# `skipped` map column.
SKIP_EMPTY_CAPTION = "empty_caption"  # caption present but empty or whitespace only
SKIP_MISSING_CAPTION = "missing_caption"  # no .txt member, no json caption, or a null cell
SKIP_INVALID_UTF8 = "invalid_utf8"  # caption bytes are not valid UTF-8
SKIP_CAPTION_TOO_LONG = "caption_too_long"  # longer than SourceConfig.max_caption_chars
SKIP_DUPLICATE_KEY = "duplicate_key"  # a key already seen in this shard; the first one counts
SKIP_REASONS: tuple[str, ...] = (
    SKIP_EMPTY_CAPTION,
    SKIP_MISSING_CAPTION,
    SKIP_INVALID_UTF8,
    SKIP_CAPTION_TOO_LONG,
    SKIP_DUPLICATE_KEY,
)

# Image-level skip reasons (webdataset with a tagger). The sample still counts for text; its image
# side is empty. Keys of the `shards` table's `images_skipped` map column.
IMAGE_MISSING = "missing_image"  # no .jpg/.jpeg/.png/.webp member
IMAGE_UNDECODABLE = "undecodable_image"  # not an image PIL can identify, or corrupt data
IMAGE_TRUNCATED = "truncated_image"  # the image data ends early
IMAGE_TOO_LARGE = "image_too_large"  # over PIL's decompression-bomb pixel limit
IMAGE_SKIP_REASONS: tuple[str, ...] = (
    IMAGE_MISSING,
    IMAGE_UNDECODABLE,
    IMAGE_TRUNCATED,
    IMAGE_TOO_LARGE,
)

SHARD_OK = "ok"
SHARD_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One input shard as listed on the driver, with the fingerprint a recount compares.

    Args:
        path: Full path or URL of the shard, as the filesystem lists it.
        size: Size in bytes.
        mtime: Modification time (seconds since the epoch), when the store reports one.
        etag: ETag or content hash, when the store reports one.
    """

    path: str
    size: int
    mtime: float | None = None
    etag: str | None = None

    @property
    def shard_id(self) -> str:
        """A stable, filename-safe id of the shard's path (used in output file names)."""
        return hashlib.sha1(self.path.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample read from a shard.

    Args:
        key: Sample key, unique within the shard (webdataset member stem, parquet key or row).
        caption: The decoded caption, or ``None`` when the sample is skipped.
        url: Source URL when the shard records one.
        metadata: The sample's json metadata as a JSON string (webdataset ``.json``), if any.
        skip: ``None`` for a usable sample, else one of :data:`SKIP_REASONS`.
        image: The encoded image bytes, when the reader was asked for images and the sample
            has an image member.
    """

    key: str
    caption: str | None
    url: str | None = None
    metadata: str | None = None
    skip: str | None = None
    image: bytes | None = None


# Shard-level read failures that can pass: an object briefly missing (a re-upload in progress)
# and store errors (5xx, a connection dropped mid-stream). A shard failing with one of these is
# read again; the other reasons (truncated_tar, unreadable, missing_column) are data defects that
# reading again cannot fix.
READ_NOT_FOUND = "not_found"
READ_STORAGE_ERROR = "storage_error"
TRANSIENT_READ_REASONS = frozenset({READ_NOT_FOUND, READ_STORAGE_ERROR})


class ShardReadError(Exception):
    """A whole shard cannot be read (missing, truncated, unreadable, wrong schema, store error).

    Args:
        reason: A short machine-readable reason (``truncated_tar``, ``missing_column``...).
        message: What went wrong and, where possible, how to fix it.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Whether reading the shard again may succeed (:data:`TRANSIENT_READ_REASONS`)."""
        return self.reason in TRANSIENT_READ_REASONS


@dataclass
class ShardStats:
    """Per-shard sample accounting; stats of several shards merge with ``+``."""

    samples_read: int = 0
    samples_counted: int = 0
    html_captions: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def samples_skipped(self) -> int:
        return sum(self.skipped.values())

    def __add__(self, other: ShardStats) -> ShardStats:
        return ShardStats(
            samples_read=self.samples_read + other.samples_read,
            samples_counted=self.samples_counted + other.samples_counted,
            html_captions=self.html_captions + other.html_captions,
            skipped=self.skipped + other.skipped,
        )
