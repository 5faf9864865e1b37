"""Arrow schemas of the output tables.

Every row carries the ``run_id`` that wrote it, so rows of different runs never mix unnoticed
(``caption_keys``: its file name does).
Image and integrated columns are NULL when a run tags no images.
"""

from __future__ import annotations

import pyarrow as pa

from freqscan.config import THRESHOLD_GRID

_TS = pa.timestamp("us", tz="UTC")


def grid_field(threshold: float) -> str:
    """Struct field of a grid threshold: 0.55 -> ``t055``."""
    return f"t{round(threshold * 100):03d}"


# Counts at every grid threshold (`image_counts.t055` in SQL); NULL below the run's score floor.
GRID_COUNTS = pa.struct([(grid_field(t), pa.int64()) for t in THRESHOLD_GRID])

FREQUENCIES = pa.schema(
    [
        ("concept_id", pa.int64()),
        ("concept", pa.string()),
        ("concept_datasets", pa.list_(pa.string())),
        ("text_count", pa.int64()),
        ("image_count", pa.int64()),
        ("integrated_count", pa.int64()),
        ("image_counts", GRID_COUNTS),
        ("integrated_counts", GRID_COUNTS),
        ("samples_scanned", pa.int64()),
        ("dataset", pa.string()),
        ("input", pa.string()),
        ("method", pa.string()),
        ("spacy_pipeline", pa.string()),
        ("spacy_pipeline_version", pa.string()),
        ("spacy_version", pa.string()),
        ("concept_set_hash", pa.string()),
        ("tagger", pa.string()),
        ("tagger_checkpoint_sha256", pa.string()),
        ("description_mode", pa.string()),
        ("image_threshold", pa.float64()),
        ("score_floor", pa.float64()),
        ("run_id", pa.string()),
    ]
)

# Sparse per-shard partial counts (only concepts with a hit): a recount replaces one shard's rows.
SHARD_COUNTS = pa.schema(
    [
        ("shard", pa.string()),
        ("concept_id", pa.int64()),
        ("text_count", pa.int64()),
        ("image_count", pa.int64()),
        ("integrated_count", pa.int64()),
        ("image_counts", GRID_COUNTS),
        ("integrated_counts", GRID_COUNTS),
        ("run_id", pa.string()),
    ]
)

# One row per sample with at least one text concept or one image score at or above the floor.
HITS = pa.schema(
    [
        ("shard", pa.string()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("metadata", pa.string()),
        ("text_concept_ids", pa.list_(pa.int64())),
        ("image_concept_ids", pa.list_(pa.int64())),
        ("image_scores", pa.list_(pa.float32())),
        ("run_id", pa.string()),
    ]
)

# What text search needs to answer a concept added later (`freqscan add-concepts`): every counted
# sample's caption keys (text/keys.py CaptionKeys), sorted. One file per shard, named like its
# hits file (which has the run id), so rows carry no run_id.
CAPTION_KEYS = pa.schema(
    [
        ("shard", pa.string()),
        ("key", pa.string()),
        ("nouns", pa.list_(pa.string())),
        ("words", pa.list_(pa.string())),
    ]
)

# The columns of a `frequencies` row that are counts (or what they were counted at); the others
# are the run's provenance, the same on every row.
FREQUENCY_COUNT_COLUMNS = frozenset(
    {
        "concept_id",
        "concept",
        "concept_datasets",
        "text_count",
        "image_count",
        "integrated_count",
        "image_counts",
        "integrated_counts",
        "samples_scanned",
        "image_threshold",
        "score_floor",
    }
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
        # Reads of the shard (more than 1 after transient failures; null in older outputs).
        ("read_attempts", pa.int32()),
        ("samples_read", pa.int64()),
        ("samples_counted", pa.int64()),
        ("samples_skipped", pa.int64()),
        ("skipped", pa.map_(pa.string(), pa.int64())),
        ("html_captions", pa.int64()),
        ("text_hits", pa.int64()),
        ("images_decoded", pa.int64()),
        ("images_skipped", pa.map_(pa.string(), pa.int64())),
        ("text_and_image", pa.int64()),
        ("misaligned_samples", pa.int64()),
        # Summary of the counted sample keys (counting/duplicates.py KeySummary), so a later run
        # finds shards holding the same samples; null for a failed shard, one with row-index
        # keys or none counted, and in older outputs.
        ("key_digest", pa.string()),
        ("key_sketch", pa.list_(pa.int64())),
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
        # Shards taken from earlier work of this output instead of read again (a resumed run).
        ("shards_reused", pa.int64()),
        ("samples_read", pa.int64()),
        ("samples_counted", pa.int64()),
        ("samples_skipped", pa.int64()),
        ("text_hits", pa.int64()),
        ("concepts_with_hits", pa.int64()),
        ("kind", pa.string()),
        ("parent_run_id", pa.string()),
        ("tagger", pa.string()),
        ("image_threshold", pa.float64()),
        ("score_floor", pa.float64()),
        ("images_decoded", pa.int64()),
        ("images_skipped", pa.int64()),
        ("text_and_image", pa.int64()),
        ("misaligned_samples", pa.int64()),
        ("misalignment_degree", pa.float64()),
        ("config", pa.string()),
        ("versions", pa.string()),
        ("table_versions", pa.string()),
        # Everything that decides the counts, as JSON (RunPlan.fingerprint); a recount compares it.
        ("fingerprint", pa.string()),
        # Shards holding sample keys of an earlier-listed shard, as a JSON list of
        # {shard, duplicates_of, same_keys}; null for runs that did not compare (older outputs).
        ("duplicate_shards", pa.string()),
    ]
)

# Name -> schema of every table a count writes, in commit order: `runs` comes last and is the
# marker that makes a run's tables current (see tables/store.py).
TABLES: dict[str, pa.Schema] = {
    "hits": HITS,
    "caption_keys": CAPTION_KEYS,
    "shard_counts": SHARD_COUNTS,
    "shards": SHARDS,
    "frequencies": FREQUENCIES,
    "runs": RUNS,
}
