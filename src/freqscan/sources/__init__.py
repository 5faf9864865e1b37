"""Read input shards: list them on the driver, stream their samples on the workers.

Everything goes through fsspec, so local paths, ``s3://`` and other stores read the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from freqscan.config import SourceConfig
from freqscan.records import Sample, ShardInfo, ShardReadError
from freqscan.sources.listing import InputError, list_shards
from freqscan.sources.parquet import check_parquet, read_parquet
from freqscan.sources.webdataset import check_webdataset, read_webdataset

__all__ = ["InputError", "check_source", "list_shards", "read_shard"]


def read_shard(shard: ShardInfo, config: SourceConfig, images: bool = False) -> Iterator[Sample]:
    """Yield every sample of a shard in shard order, unusable ones with their skip reason.

    Keys are not de-duplicated: the caller counts duplicates.

    Args:
        shard: A shard listed by :func:`list_shards`.
        config: How to read it (``config.format`` picks the reader).
        images: Also read image bytes (webdataset only; caption parquet has no images).

    Raises:
        ShardReadError: The shard cannot be read to its end (reasons ``not_found``,
            ``storage_error``, which are transient, and ``truncated_tar``, ``unreadable``,
            ``missing_column``). Samples yielded before the error belong to a failed shard and
            must be discarded.
    """
    if config.format == "webdataset":
        return read_webdataset(shard, config, images=images)
    return read_parquet(shard, config)


def check_source(shards: Sequence[ShardInfo], config: SourceConfig) -> None:
    """Refuse, on the driver, input that no worker could read.

    Reads only the first shard: its parquet schema (every configured column must exist) or its
    first tar header.

    Args:
        shards: The listed shards.
        config: How they are to be read.

    Raises:
        InputError: No shards, or the first one is not readable in ``config.format`` or lacks
            a configured column.
    """
    if not shards:
        raise InputError(f"no shards to read in {', '.join(config.input)}")
    try:
        if config.format == "parquet":
            check_parquet(shards[0], config)
        else:
            check_webdataset(shards[0])
    except ShardReadError as exc:
        raise InputError(exc.message) from None
