"""Arrow schemas of the output tables.

Every row carries the ``run_id`` that wrote it, so rows of different runs never mix unnoticed.
Later columns (image counts, integrated counts) are added by Delta schema evolution.
"""

from __future__ import annotations

import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")

FREQUENCIES = pa.schema(
    [
        ("concept_id", pa.int64()),
        ("concept", pa.string()),
        ("concept_datasets", pa.list_(pa.string())),
        ("text_count", pa.int64()),
        ("samples_scanned", pa.int64()),
        ("dataset", pa.string()),
        ("input", pa.string()),
        ("method", pa.string()),
        ("spacy_pipeline", pa.string()),
        ("spacy_pipeline_version", pa.string()),
        ("spacy_version", pa.string()),
        ("concept_set_hash", pa.string()),
        ("run_id", pa.string()),
    ]
)

# Sparse per-shard partial counts (only concepts with a hit): a recount replaces one shard's rows.
SHARD_COUNTS = pa.schema(
    [
        ("shard", pa.string()),
        ("concept_id", pa.int64()),
        ("text_count", pa.int64()),
        ("run_id", pa.string()),
    ]
)

# One row per sample with at least one matched concept.
HITS = pa.schema(
    [
        ("shard", pa.string()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("metadata", pa.string()),
        ("text_concept_ids", pa.list_(pa.int64())),
        ("run_id", pa.string()),
    ]
)

SHARDS = pa.schema(
    [
        ("shard", pa.string()),
        ("shard_id", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("etag", pa.string()),
        ("status", pa.string()),
        ("error_reason", pa.string()),
        ("error", pa.string()),
        ("samples_read", pa.int64()),
        ("samples_counted", pa.int64()),
        ("samples_skipped", pa.int64()),
        ("skipped", pa.map_(pa.string(), pa.int64())),
        ("html_captions", pa.int64()),
        ("text_hits", pa.int64()),
        ("run_id", pa.string()),
    ]
)

RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("status", pa.string()),
        ("started_at", _TS),
        ("finished_at", _TS),
        ("dataset", pa.string()),
        ("input", pa.string()),
        ("method", pa.string()),
        ("concept_set", pa.string()),
        ("concept_set_hash", pa.string()),
        ("concepts", pa.int64()),
        ("shards_total", pa.int64()),
        ("shards_ok", pa.int64()),
        ("shards_failed", pa.int64()),
        ("samples_read", pa.int64()),
        ("samples_counted", pa.int64()),
        ("samples_skipped", pa.int64()),
        ("text_hits", pa.int64()),
        ("concepts_with_hits", pa.int64()),
        ("config", pa.string()),
        ("versions", pa.string()),
        ("table_versions", pa.string()),
    ]
)

# Name -> schema of every table a count writes, in commit order: `runs` comes last and is the
# marker that makes a run's tables current (see tables/store.py).
TABLES: dict[str, pa.Schema] = {
    "hits": HITS,
    "shard_counts": SHARD_COUNTS,
    "shards": SHARDS,
    "frequencies": FREQUENCIES,
    "runs": RUNS,
}
