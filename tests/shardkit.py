"""Build test shards: img2dataset-style webdataset tars and caption parquet files."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Stands in for an image: the readers never decode it.
PLACEHOLDER_JPG = b"\xff\xd8\xff\xe0placeholder\xff\xd9"


def write_webdataset_shard(path: str | Path, samples: Sequence[Mapping[str, Any]]) -> None:
    """Write a tar with one member per sample field, like img2dataset's writer.

    Args:
        path: The tar to write.
        samples: Dicts with ``key`` and any members by extension (``txt``, ``json``, ``jpg``,
            ``seg.png``...): str is written as UTF-8, a dict as JSON, bytes as they are. Samples
            are written in the given order, each one's members sorted by extension.
    """
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext in sorted(k for k in sample if k != "key"):
                data = _member_bytes(sample[ext])
                member = tarfile.TarInfo(f"{sample['key']}.{ext}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))


def _member_bytes(value: str | bytes | dict[str, Any]) -> bytes:
    if isinstance(value, dict):
        return json.dumps(value).encode("utf-8")
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def captions_to_webdataset(
    parquet_paths: Sequence[str],
    out_dir: str,
    shard_size: int,
    caption_column: str = "TEXT",
    url_column: str = "URL",
) -> list[str]:
    """Turn caption parquet into img2dataset-style shards ``00000.tar, 00001.tar, ...``.

    Sample ``index`` of shard ``shard`` has key ``f"{shard:05d}{index:04d}"``, its caption as
    ``.txt`` (left out for a null caption, as img2dataset does), a ``.json`` with url, caption,
    key and status, and a placeholder ``.jpg``.

    Args:
        parquet_paths: Caption parquet files, read in order.
        out_dir: Where the tars go (created if missing).
        shard_size: Samples per tar (at most 10,000 to keep keys 9 digits long).
        caption_column: The parquet caption column.
        url_column: The parquet URL column.

    Returns:
        The paths of the written tars, in order.
    """
    rows = pa.concat_tables(
        pq.read_table(p, columns=[caption_column, url_column]) for p in parquet_paths
    )
    pairs = list(zip(rows[caption_column].to_pylist(), rows[url_column].to_pylist(), strict=True))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, start in enumerate(range(0, len(pairs), shard_size)):
        samples = []
        for index, (caption, url) in enumerate(pairs[start : start + shard_size]):
            key = f"{shard:05d}{index:04d}"
            sample = {
                "key": key,
                "jpg": PLACEHOLDER_JPG,
                "json": {"url": url, "caption": caption, "key": key, "status": "success"},
            }
            if caption is not None:
                sample["txt"] = caption
            samples.append(sample)
        path = str(Path(out_dir) / f"{shard:05d}.tar")
        write_webdataset_shard(path, samples)
        paths.append(path)
    return paths


def write_caption_parquet(
    path: str | Path,
    captions: Sequence[str | None] | Sequence[bytes | None],
    urls: Sequence[str | None] | None = None,
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
) -> None:
    """Write a LAION-style caption parquet.

    Args:
        path: The file to write.
        captions: The ``TEXT`` column: string, or binary when the captions are bytes.
        urls: The ``URL`` column; all null when not given (LAION files always have one).
        extra_columns: More columns, name -> values.
    """
    binary = any(isinstance(c, bytes) for c in captions)
    columns: dict[str, Any] = {
        "TEXT": pa.array(captions, pa.binary() if binary else pa.string()),
        "URL": pa.array(urls if urls is not None else [None] * len(captions), pa.string()),
    }
    columns.update(extra_columns or {})
    pq.write_table(pa.table(columns), path)


def truncate_file(path: str | Path, keep_bytes: int) -> None:
    """Cut a file after its first ``keep_bytes`` bytes, like an interrupted upload.

    Args:
        path: The file to cut.
        keep_bytes: How many leading bytes to keep.
    """
    with open(path, "r+b") as f:
        f.truncate(keep_bytes)


def split_parquet(
    rows: pa.Table, out_dir: str | Path, rows_per_shard: int, shards: Iterable[int]
) -> None:
    """Write shard ``i`` of ``shards`` as ``part-{i:05d}.parquet``: rows ``i*n .. (i+1)*n``."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for i in shards:
        pq.write_table(
            rows.slice(i * rows_per_shard, rows_per_shard), Path(out_dir) / f"part-{i:05d}.parquet"
        )
