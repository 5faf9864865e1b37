"""Compare the tables of two outputs row for row, ignoring only which run wrote them."""

from __future__ import annotations

from typing import Any

from freqscan.tables.store import OutputStore

COMPARED = ("frequencies", "shard_counts", "shards", "hits")
SORT_KEYS = {
    "frequencies": ("concept_id",),
    "shard_counts": ("shard", "concept_id"),
    "shards": ("shard",),
    "hits": ("shard", "key"),
}


def comparable_tables(out: str) -> dict[str, list[dict[str, Any]]]:
    """The current run's tables, run ids dropped, rows in a fixed order."""
    snapshot = OutputStore(str(out)).snapshot()
    tables = {}
    for name in COMPARED:
        table = snapshot[name].to_table()
        rows = table.drop_columns([c for c in ("run_id",) if c in table.column_names]).to_pylist()
        tables[name] = sorted(rows, key=lambda r, k=SORT_KEYS[name]: tuple(r[c] for c in k))
    return tables


def assert_same_tables(out: str, reference: str) -> None:
    got, want = comparable_tables(out), comparable_tables(reference)
    for name in COMPARED:
        assert len(got[name]) == len(want[name]), name
        assert got[name] == want[name], name
