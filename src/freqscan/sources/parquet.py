"""Stream the samples of one caption parquet shard (LAION metadata: TEXT, URL, ...).

Only the configured columns are read, in record batches, so a shard of millions of rows keeps
the worker's memory flat.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from freqscan.config import SourceConfig
from freqscan.records import Sample, ShardInfo, ShardReadError
from freqscan.sources.captions import decode_caption
from freqscan.sources.files import open_shard

BATCH_ROWS = 8192

# pyarrow's errors on a damaged file: ArrowInvalid (bad footer, bad thrift), OSError (I/O).
# pyarrow re-raises an exception of the Python file as it is, so the shard file's
# ShardReadError("storage_error") (see open_shard) passes these handlers untouched.
_PARQUET_ERRORS = (pa.ArrowException, OSError)


def read_parquet(shard: ShardInfo, config: SourceConfig) -> Iterator[Sample]:
    """Yield one sample per row of a caption parquet shard, in row order.

    Args:
        shard: The parquet shard.
        config: Source settings: caption, url and key columns, ``max_caption_chars``. Without a
            key column (or for a null key) the key is the row index in the shard.

    Raises:
        ShardReadError: ``not_found``, ``missing_column`` (a configured column is absent, or
            the caption column does not hold text), ``unreadable`` (not a parquet file,
            corrupt, permission denied) or ``storage_error`` (the store failed mid-read).
            Samples read before the failure may already have been yielded.
    """
    row = 0
    for batch in _record_batches(shard, config):
        nulls = [None] * batch.num_rows
        captions = _values(batch.column(config.caption_column))
        urls = _values(batch.column(config.url_column)) if config.url_column else nulls
        keys = _values(batch.column(config.key_column)) if config.key_column else nulls
        for i, (raw, url, key) in enumerate(zip(captions, urls, keys, strict=True)):
            caption, skip = decode_caption(raw, config.max_caption_chars)
            yield Sample(
                key=_as_text(row + i if key is None else key),
                caption=caption,
                url=None if url is None else _as_text(url),
                skip=skip,
            )
        row += batch.num_rows


def check_parquet(shard: ShardInfo, config: SourceConfig) -> None:
    """Read a parquet shard's schema and check it has the configured columns.

    Args:
        shard: The parquet shard.
        config: Source settings naming the caption, url and key columns.

    Raises:
        ShardReadError: The shard is missing or unreadable, or lacks a configured column.
    """
    with _parquet_file(shard, config):
        pass


def _record_batches(shard: ShardInfo, config: SourceConfig) -> Iterator[pa.RecordBatch]:
    with _parquet_file(shard, config) as pf:
        columns = list(dict.fromkeys(_configured_columns(config).values()))
        try:
            yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=columns)
        except _PARQUET_ERRORS as exc:
            raise ShardReadError("unreadable", f"{shard.path}: corrupt parquet ({exc})") from None


@contextmanager
def _parquet_file(shard: ShardInfo, config: SourceConfig) -> Iterator[pq.ParquetFile]:
    """Open the shard's parquet footer and check the configured columns against its schema."""
    with open_shard(shard) as f:
        try:
            pf = pq.ParquetFile(f)
        except _PARQUET_ERRORS as exc:
            raise ShardReadError(
                "unreadable", f"{shard.path}: not a readable parquet file ({exc})"
            ) from None
        _check_columns(pf.schema_arrow, shard.path, config)
        yield pf


# How to point freqscan at another column, per role; shown in the missing-column message.
_COLUMN_FIX = {
    "caption": "set --caption-column to one of them",
    "url": "set --url-column to one of them, or to '' for none",
    "key": "set --key-column to one of them, or leave it unset to key by row index",
}


def _configured_columns(config: SourceConfig) -> dict[str, str]:
    """role -> column name, for the roles the config uses."""
    roles = {"caption": config.caption_column, "url": config.url_column, "key": config.key_column}
    return {role: name for role, name in roles.items() if name}


def _check_columns(schema: pa.Schema, path: str, config: SourceConfig) -> None:
    available = ", ".join(schema.names)
    for role, name in _configured_columns(config).items():
        if name not in schema.names:
            raise ShardReadError(
                "missing_column",
                f"column '{name}' not in {path}; available: {available} ({_COLUMN_FIX[role]})",
            )
    caption_type = schema.field(config.caption_column).type
    if not _is_text(caption_type):
        raise ShardReadError(
            "missing_column",
            f"column '{config.caption_column}' in {path} holds {caption_type}, not text; "
            f"available: {available} ({_COLUMN_FIX['caption']})",
        )


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return any(
        check(t)
        for check in (
            pa.types.is_null,  # a column with only nulls: every caption is missing
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_string_view,
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_binary_view,
            pa.types.is_fixed_size_binary,
        )
    )


def _values(column: pa.Array) -> list[Any]:
    """A column's Python values, text as raw bytes.

    Text goes through binary so that invalid UTF-8 (which parquet writers do not always
    reject) becomes one skipped caption instead of a UnicodeDecodeError for the whole batch.
    """
    if _is_text(column.type):
        column = column.cast(pa.large_binary())
    return column.to_pylist()


def _as_text(value: Any) -> str:
    """Keys and URLs as text; bytes that are not UTF-8 keep their bad bytes as escapes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)
