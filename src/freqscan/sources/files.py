"""Open a listed shard through fsspec, turning open failures into ShardReadError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import fsspec

from freqscan.records import ShardInfo, ShardReadError


@contextmanager
def open_shard(shard: ShardInfo) -> Iterator[BinaryIO]:
    """Open a shard for binary reading (local path or any fsspec URL).

    Args:
        shard: The shard, as :func:`freqscan.sources.listing.list_shards` listed it.

    Raises:
        ShardReadError: ``not_found`` when the shard is gone, ``unreadable`` when it cannot be
            opened (permission denied, a directory, an unreachable store).
    """
    try:
        fs, path = fsspec.core.url_to_fs(shard.path)
        f = fs.open(path, "rb")
    except FileNotFoundError:
        raise ShardReadError(
            "not_found", f"{shard.path}: no such file (moved or deleted after listing?)"
        ) from None
    except (OSError, ImportError, ValueError) as exc:
        raise ShardReadError("unreadable", f"{shard.path}: cannot open: {exc}") from None
    with f:
        yield f
