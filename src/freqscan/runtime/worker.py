"""The Ray Data adapter around :func:`freqscan.counting.shard.count_shard`.

One actor of the pool loads spaCy once in ``__init__`` and then counts one shard per call. It
writes the shard's hits file into the output (bypassing the driver, which only ever sees one
small row per shard) and returns the shard's stats and partial counts as that row.
"""

from __future__ import annotations

import json

import pyarrow as pa

from freqscan.config import SourceConfig, TextConfig
from freqscan.counting.shard import ShardResult, count_shard
from freqscan.records import ShardInfo
from freqscan.tables.store import write_data_file
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.searcher import TextSearcher

# What the planner sends per shard.
SHARD_TASK = pa.schema(
    [("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()), ("etag", pa.string())]
)

# What a worker returns per shard.
SHARD_OUTCOME = pa.schema(
    [
        ("shard", pa.string()),
        ("status", pa.string()),
        ("error_reason", pa.string()),
        ("error", pa.string()),
        ("samples_read", pa.int64()),
        ("samples_counted", pa.int64()),
        ("html_captions", pa.int64()),
        ("skipped", pa.string()),  # JSON {reason: n}; the driver turns it into a map column
        ("concept_ids", pa.list_(pa.int64())),
        ("concept_counts", pa.list_(pa.int64())),
        ("hits_file", pa.string()),
        ("hits_size", pa.int64()),
        ("hits_mtime", pa.int64()),
        ("hits_rows", pa.int64()),
    ]
)


def hits_filename(run_id: str, shard: ShardInfo) -> str:
    """Fixed per (run, shard): a retried shard overwrites its own file, never adds one."""
    return f"part-{run_id}-{shard.shard_id}.parquet"


class ShardCountWorker:
    """Callable class for ``Dataset.map_batches`` on an actor pool.

    Args:
        source: How to read shards.
        text: Text search settings.
        matcher: The concept matcher built once on the driver.
        out: Output directory the hits files go to.
        run_id: The run writing them.
    """

    def __init__(
        self, source: SourceConfig, text: TextConfig, matcher: ConceptMatcher, out: str, run_id: str
    ) -> None:
        self._source = source
        self._searcher = TextSearcher(text, matcher)
        self._out = out
        self._run_id = run_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        outcomes = [self._count(ShardInfo(**task)) for task in batch.to_pylist()]
        return pa.Table.from_pylist(outcomes, schema=SHARD_OUTCOME)

    def _count(self, shard: ShardInfo) -> dict:
        result = count_shard(shard, self._source, self._searcher.search)
        row = _outcome_row(result)
        if result.hits is not None and result.hits.num_rows:
            hits = result.hits.append_column(
                "run_id", pa.repeat(self._run_id, result.hits.num_rows)
            )
            written = write_data_file(self._out, "hits", hits_filename(self._run_id, shard), hits)
            row.update(
                hits_file=written.path,
                hits_size=written.size,
                hits_mtime=written.modification_time,
                hits_rows=written.num_rows,
            )
        return row


def _outcome_row(result: ShardResult) -> dict:
    ids = sorted(result.concept_counts)
    return {
        "shard": result.shard.path,
        "status": result.status,
        "error_reason": result.error_reason,
        "error": result.error,
        "samples_read": result.stats.samples_read,
        "samples_counted": result.stats.samples_counted,
        "html_captions": result.stats.html_captions,
        "skipped": json.dumps(dict(sorted(result.stats.skipped.items()))),
        "concept_ids": ids,
        "concept_counts": [result.concept_counts[i] for i in ids],
        "hits_file": None,
        "hits_size": None,
        "hits_mtime": None,
        "hits_rows": 0,
    }
