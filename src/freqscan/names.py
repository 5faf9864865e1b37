"""Names a user types: the output's views, version words, the counts `diff` compares.

Kept apart from the modules that use them (``query``, ``history``: DuckDB, pyarrow, deltalake)
so that the CLI lists them in its help without importing those libraries at start-up.
"""

from __future__ import annotations

# Views every query can use, in the order `freqscan query --help` lists them.
VIEWS: tuple[str, ...] = ("frequencies", "shards", "hits", "runs", "shard_counts", "caption_keys")

# Version words `history`, `diff` and `query --attach` resolve besides numbers and run ids.
LATEST = "latest"
PREVIOUS = "previous"

# `diff --by` -> the frequencies column it compares.
COUNT_COLUMNS: dict[str, str] = {
    "text": "text_count",
    "image": "image_count",
    "integrated": "integrated_count",
}
