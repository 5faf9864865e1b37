"""What the benchmark scripts share: the bundled sample as shards, timing, the results' footer."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

SAMPLE = Path(__file__).parents[1] / "src" / "freqscan" / "data" / "laion-sample"
T = TypeVar("T")


def sample_shards(directory: Path, shards: int) -> pa.Table:
    """Split the 10,000 bundled LAION captions into ``shards`` caption-parquet files."""
    rows = pa.concat_tables(pq.read_table(p) for p in sorted(SAMPLE.glob("part-*.parquet")))
    per = len(rows) // shards
    directory.mkdir(parents=True)
    for i in range(shards):
        pq.write_table(rows.slice(i * per, per), directory / f"part-{i:05d}.parquet")
    return rows


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and its wall seconds."""
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def emit(results: dict[str, Any], json_path: str | None) -> None:
    """Print the results with the date and machine; also write them to ``json_path``."""
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        **results,
    }
    print(json.dumps(results, indent=2))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))
