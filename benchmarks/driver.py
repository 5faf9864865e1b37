"""The driver's per-sample work: samples/s per driver core, for tagged and for text-only rows.

Synthetic shards go through what ``runtime.pipeline._count_on_ray`` does on the driver, per
shard, in one process with Arrow's thread pool held to one thread (one driver core):
  * arrive: ``ShardAssembler.add`` of each chunk of sample rows (schema ``SAMPLE_ROWS``, in the
    chunks the tagging stage or the readers send), the image bytes already dropped by tagging;
  * complete: the ``add`` of the shard's outcome row, which counts the shard and builds its hits;
  * write_hits: ``_write_hits``, the hits file written (zstd parquet) to a local temp dir;
and end_to_end, the three together. On the same shards' columns, side by side:
  * tally: the per-sample definition, ``counting.tally.tally`` on ``to_pylist`` columns;
  * tally_columns: the vectorised reduce (``counting.reduce``), where the code has it.

Tagged rows: 30 stored float32 scores per sample in [0.5, 1) over 4,585 concepts (RAM++'s tag
count), listed in concept-set order; 0-3 caption concepts; floor 0.5, threshold 0.7, the
paper's grid 0.5..0.9. Text-only rows: 1-4 caption concepts, no image. Shards are sent one after
the other (the tagging stage may interleave them; the work per row is the same).

    .venv/bin/python benchmarks/driver.py [--tagged 200000] [--text 1000000] [--json out.json]

To time the code before a change, run the same script with ``PYTHONPATH=<old tree>/src``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import freqscan
from freqscan.config import THRESHOLD_GRID
from freqscan.counting.assemble import ShardAssembler
from freqscan.counting.shard import SAMPLE_ROWS, TEXT_CHUNK, ShardOutcome
from freqscan.counting.tally import Thresholds, tally
from freqscan.records import ShardStats
from freqscan.runtime.pipeline import _write_hits

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import emit  # noqa: E402

CONCEPTS = 4585
SCORES_PER_SAMPLE = 30
TAG_BATCH = 64  # ImageConfig.batch_size: rows per tagging batch, the chunks the driver gets
THRESHOLDS = Thresholds(default=0.7, floor=0.5, grid=THRESHOLD_GRID)
HAS_REDUCE = importlib.util.find_spec("freqscan.counting.reduce") is not None
CONCEPT_IDS = np.random.default_rng(0).integers(0, 2**63 - 1, CONCEPTS)


def lists(rng: np.random.Generator, values: np.ndarray, low: int, high: int, rows: int):
    """Per row, ``low..high`` values drawn from ``values``, as a list array."""
    lengths = rng.integers(low, high + 1, rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(offsets, pa.array(rng.choice(values, offsets[-1])))


def tagged_image_columns(rng: np.random.Generator, ids: np.ndarray, rows: int):
    """30 distinct concepts per row in concept-set order (ascending positions), with scores."""
    gaps = rng.integers(1, CONCEPTS // SCORES_PER_SAMPLE + 1, (rows, SCORES_PER_SAMPLE))
    positions = np.cumsum(gaps, axis=1).ravel() - 1
    offsets = np.arange(rows + 1, dtype=np.int32) * SCORES_PER_SAMPLE
    scores = rng.uniform(0.5, 1.0, len(positions)).astype(np.float32)
    return (
        pa.ListArray.from_arrays(offsets, pa.array(ids[positions])),
        pa.ListArray.from_arrays(offsets, pa.array(scores, pa.float32())),
    )


def shard_rows(rng: np.random.Generator, shard: str, rows: int, tagged: bool) -> pa.Table:
    keys = pa.array([f"{i:09d}" for i in range(rows)])
    text = lists(rng, CONCEPT_IDS, 0, 3, rows) if tagged else lists(rng, CONCEPT_IDS, 1, 4, rows)
    if tagged:
        image, scores = tagged_image_columns(rng, CONCEPT_IDS, rows)
    else:
        image, scores = pa.nulls(rows, pa.list_(pa.int64())), pa.nulls(rows, pa.list_(pa.float32()))
    columns = {
        "shard": pa.repeat(shard, rows),
        "key": keys,
        "url": pc.binary_join_element_wise("https://images.example.com/", keys, ".jpg", ""),
        "caption": pc.binary_join_element_wise("a photo of sample ", keys, " by the sea", ""),
        "metadata": pa.nulls(rows, pa.string()),
        "text_concept_ids": text,
        "image_concept_ids": image,
        "image_scores": scores,
        "image": pa.nulls(rows, pa.binary()),
        "outcome": pa.nulls(rows, pa.string()),
    }
    return pa.table(columns).cast(SAMPLE_ROWS)


def outcome_row(shard: str, rows: int) -> pa.Table:
    outcome = ShardOutcome(shard, rows=rows, stats=ShardStats(rows, rows))
    return pa.Table.from_pylist([{"shard": shard, "outcome": outcome.to_json()}], SAMPLE_ROWS)


@dataclass
class Clock:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, t0: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def chunks(table: pa.Table, size: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


def measure(rows: int, shard_rows_: int, tagged: bool, out: str) -> dict:
    rng = np.random.default_rng(1)
    thresholds = THRESHOLDS if tagged else None
    assembler = ShardAssembler(thresholds)
    clock = Clock()
    for i in range(max(1, rows // shard_rows_)):
        name = f"shard-{i:05d}.tar"
        table = shard_rows(rng, name, shard_rows_, tagged)
        for chunk in chunks(table, TAG_BATCH if tagged else TEXT_CHUNK):
            t0 = time.perf_counter()
            assert assembler.add(chunk) == []
            clock.add("arrive", t0)
        t0 = time.perf_counter()
        (done,) = assembler.add(outcome_row(name, table.num_rows))
        clock.add("complete", t0)
        t0 = time.perf_counter()
        _write_hits(out, "bench", done)
        clock.add("write_hits", t0)

        columns = [table.column(c) for c in ("text_concept_ids", "image_concept_ids")]
        columns.append(table.column("image_scores"))
        t0 = time.perf_counter()
        spec = tally(*(c.to_pylist() for c in columns), thresholds)
        clock.add("tally", t0)
        assert done.tally == spec
        if HAS_REDUCE:
            from freqscan.counting.reduce import tally_columns

            t0 = time.perf_counter()
            fast = tally_columns(*columns, thresholds)
            clock.add("tally_columns", t0)
            assert fast == spec
    counted = max(1, rows // shard_rows_) * shard_rows_
    clock.seconds["end_to_end"] = sum(
        clock.seconds[s] for s in ("arrive", "complete", "write_hits")
    )
    return {
        "samples": counted,
        "shard_rows": shard_rows_,
        "seconds": {k: round(v, 3) for k, v in clock.seconds.items()},
        "samples_per_s": {k: round(counted / v) for k, v in clock.seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tagged", type=int, default=200_000, help="Tagged samples.")
    parser.add_argument("--text", type=int, default=1_000_000, help="Text-only samples.")
    parser.add_argument("--shard-rows", type=int, default=10_000, help="Samples per shard.")
    parser.add_argument("--json", help="Also write the results here.")
    args = parser.parse_args()
    pa.set_cpu_count(1)  # one driver core
    with tempfile.TemporaryDirectory() as out:
        tagged = measure(args.tagged, args.shard_rows, True, out)
        text = measure(args.text, args.shard_rows, False, out)
    emit(
        {
            "code": str(Path(freqscan.__file__).parent),
            "tagged": tagged,
            "text_only": text,
            "gpus_fed_at_1200_img_s": round(tagged["samples_per_s"]["end_to_end"] / 1200, 1),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
