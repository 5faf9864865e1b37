"""List a dataset's shards on any fsspec filesystem, with the fingerprint a recount compares.

Runs on the driver before any work starts, so every unusable input (missing path, empty
directory, wrong format) is refused here with a message naming the input.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from freqscan.errors import UserError
from freqscan.records import ShardInfo

# The extension of a shard in each format; files without it are not shards (img2dataset writes
# NNNNN.parquet and NNNNN_stats.json beside each NNNNN.tar).
SHARD_EXTENSIONS: dict[str, str] = {"webdataset": ".tar", "parquet": ".parquet"}

_GLOB_CHARS = re.compile(r"[*?\[]")
# Where each store reports the modification time and content hash in `fs.info`: local files
# (mtime), S3 (LastModified, ETag), Azure (last_modified, etag), GCS (updated, etag).
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated")
_ETAG_KEYS = ("ETag", "etag")


class InputError(UserError, ValueError):
    """An input cannot be used: missing, matching nothing, or holding no shard of the format."""


def list_shards(inputs: Sequence[str], format: str) -> list[ShardInfo]:
    """List the shards of the given inputs.

    Args:
        inputs: Files, directories (searched recursively) or globs, as local paths or fsspec
            URLs (``s3://bucket/prefix``).
        format: ``webdataset`` (``.tar`` shards) or ``parquet`` (``.parquet`` shards).

    Returns:
        The shards sorted by path, without duplicates. Local paths are absolute; remote ones
        are full URLs with their protocol.

    Raises:
        InputError: An input is missing, matches nothing, holds no shard of the format, or is
            a file with another extension.
    """
    if format not in SHARD_EXTENSIONS:
        raise InputError(f"format {format!r} is not one of {', '.join(SHARD_EXTENSIONS)}")
    found: dict[str, ShardInfo] = {}
    for item in inputs:
        for shard in _list_input(item, format):
            found[shard.path] = shard
    return [found[path] for path in sorted(found)]


def _list_input(item: str, format: str) -> list[ShardInfo]:
    ext = SHARD_EXTENSIONS[format]
    try:
        fs, root = fsspec.core.url_to_fs(item)
    except (ImportError, ValueError) as exc:  # unknown protocol, or its fsspec package missing
        raise InputError(f"input {item}: cannot open its filesystem: {exc}") from None
    try:
        files = _files(fs, root, item, format)
    except InputError:
        raise
    except (OSError, ValueError) as exc:  # permission denied, store unreachable, bad pattern
        raise InputError(f"input {item}: cannot list: {exc}") from None
    shards = [
        shard_info(fs, path, info) for path, info in files.items() if _has_extension(path, ext)
    ]
    if not shards:
        raise InputError(f"no {ext} shards under {item}" + _format_hint(files, format))
    return shards


def _files(
    fs: fsspec.AbstractFileSystem, root: str, item: str, format: str
) -> dict[str, dict[str, Any]]:
    """path -> info of every file the input names, matches, or holds (recursively)."""
    if _GLOB_CHARS.search(root):
        matches = fs.glob(root, detail=True)
        if not matches:
            raise InputError(f"input {item}: the glob matches nothing")
        return dict(_expand_directories(fs, matches.items()))
    try:
        info = fs.info(root)
    except FileNotFoundError:
        raise InputError(f"input {item}: no such file or directory") from None
    ext = SHARD_EXTENSIONS[format]
    if info["type"] != "directory" and not _has_extension(root, ext):
        raise InputError(
            f"input {item}: not a {ext} file (format {format} reads {ext} shards)"
            + _format_hint([root], format)
        )
    return dict(_expand_directories(fs, [(root, info)]))


def _expand_directories(
    fs: fsspec.AbstractFileSystem, entries: Iterable[tuple[str, dict[str, Any]]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (path, info) of every file, replacing each directory by the files under it."""
    for path, info in entries:
        if info["type"] == "directory":
            yield from fs.find(path, detail=True).items()
        else:
            yield path, info


def _has_extension(path: str, ext: str) -> bool:
    return path.lower().endswith(ext)


def _format_hint(paths: Collection[str], format: str) -> str:
    """Suggest the other format when the paths hold its shards."""
    others = [
        name
        for name, ext in SHARD_EXTENSIONS.items()
        if name != format and any(_has_extension(p, ext) for p in paths)
    ]
    return f" (did you mean --format {others[0]}?)" if others else ""


def shard_info(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any]) -> ShardInfo:
    """The shard's fingerprint (path, size, mtime, etag) from the store's ``info`` of it."""
    # Local paths stay plain paths; remote ones keep their protocol so workers can open them.
    full = path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)
    mtime = next((_timestamp(info[k]) for k in _MTIME_KEYS if info.get(k) is not None), None)
    etag = next((str(info[k]) for k in _ETAG_KEYS if info.get(k)), None)
    return ShardInfo(path=full, size=int(info["size"]), mtime=mtime, etag=etag)


def _timestamp(value: Any) -> float | None:
    """Seconds since the epoch from a number, a datetime or an ISO 8601 string."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None
