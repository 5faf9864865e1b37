"""Open a listed shard through fsspec, turning its I/O failures into ShardReadError.

Store failures (an open refused with a 5xx, a connection dropped mid-stream) become the
transient ``storage_error``, distinct from the data defects the readers report, so that the
caller can read the shard again instead of declaring it corrupt.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, TypeVar

import fsspec

from freqscan.records import READ_NOT_FOUND, READ_STORAGE_ERROR, ShardInfo, ShardReadError
from freqscan.sources.listing import shard_info

_T = TypeVar("_T")


@contextmanager
def open_shard(shard: ShardInfo) -> Iterator[io.RawIOBase]:
    """Open a shard for binary reading (local path or any fsspec URL).

    Args:
        shard: The shard, as :func:`freqscan.sources.listing.list_shards` listed it.

    Yields:
        The shard's bytes. Every exception its I/O raises (read, seek...) arrives as
        ``ShardReadError("storage_error")``.

    Raises:
        ShardReadError: ``not_found`` when the shard is gone, ``unreadable`` when it cannot be
            opened (permission denied, a directory, no filesystem for its protocol),
            ``storage_error`` on any other OS or store error.
    """
    try:
        fs, path = fsspec.core.url_to_fs(shard.path)
        f = fs.open(path, "rb")
    except FileNotFoundError:
        raise ShardReadError(
            READ_NOT_FOUND, f"{shard.path}: no such file (moved or deleted after listing?)"
        ) from None
    except (
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
        ImportError,
        ValueError,
    ) as exc:
        raise ShardReadError("unreadable", f"{shard.path}: cannot open: {exc}") from None
    except OSError as exc:
        raise ShardReadError(
            READ_STORAGE_ERROR, f"{shard.path}: cannot open: {_describe(exc)}"
        ) from None
    with f:
        yield _StorageErrorFile(f, shard.path)


def changed_since_listing(shard: ShardInfo) -> str | None:
    """Compare the shard's object now with its listed fingerprint.

    The size always counts; the etag names the content where the listing had one, else the
    modification time stands in for it.

    Args:
        shard: The shard, as :func:`freqscan.sources.listing.list_shards` listed it.

    Returns:
        What changed (``"size 120 -> 96"``), or ``None`` when nothing did or the object cannot
        be looked at now (the next open reports why).
    """
    try:
        fs, path = fsspec.core.url_to_fs(shard.path)
        fs.invalidate_cache(path)  # info cached by the listing would always match
        now = shard_info(fs, path, fs.info(path))
    except (OSError, ImportError, ValueError):
        return None
    fields = ("size", "etag") if shard.etag is not None else ("size", "mtime")
    changes = [
        f"{name} {getattr(shard, name)} -> {getattr(now, name)}"
        for name in fields
        if getattr(shard, name) is not None and getattr(shard, name) != getattr(now, name)
    ]
    return ", ".join(changes) or None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _StorageErrorFile(io.RawIOBase):
    """A shard's file whose I/O failures raise ``ShardReadError("storage_error")``.

    Without this a store error surfacing in the middle of a tar or parquet read (an OSError,
    a botocore or aiohttp error) would be taken by the reader for a corrupt file. Closing it
    leaves the underlying file to :func:`open_shard`.
    """

    def __init__(self, f: BinaryIO, path: str) -> None:
        super().__init__()
        self._f = f
        self._path = path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._io(self._f.seekable)

    def read(self, size: int = -1) -> bytes:
        return self._io(self._f.read, size)

    def readinto(self, buffer: Any) -> int:
        return self._io(self._f.readinto, buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._io(self._f.seek, offset, whence)

    def tell(self) -> int:
        return self._io(self._f.tell)

    def _io(self, call: Callable[..., _T], *args: Any) -> _T:
        try:
            return call(*args)
        except Exception as exc:
            raise ShardReadError(
                READ_STORAGE_ERROR, f"{self._path}: reading failed: {_describe(exc)}"
            ) from None
