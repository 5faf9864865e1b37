"""Ad hoc SQL over an output's tables with DuckDB.

The tables are opened through deltalake at the versions a run committed and handed to DuckDB as
Arrow datasets, so no DuckDB extension (and no network) is needed, and a query never sees a
half-committed run.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from freqscan.tables.store import OutputStore

# Views every query can use, in the order `freqscan query --help` lists them.
VIEWS: tuple[str, ...] = ("frequencies", "shards", "hits", "runs", "shard_counts")


def connect(out: str, run_id: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per table of ``out`` (latest or given run)."""
    snapshot = OutputStore(out).snapshot(run_id)
    con = duckdb.connect()
    for name in VIEWS:
        con.register(name, snapshot[name])
    return con


def run_query(out: str, sql: str, run_id: str | None = None) -> pa.Table:
    """Run ``sql`` over the output's views and return the result as an Arrow table."""
    con = connect(out, run_id)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def concept_examples(con: duckdb.DuckDBPyConnection, concept_id: int, limit: int) -> pa.Table:
    """Up to ``limit`` hits (shard, key, caption) of one concept, in shard and key order.

    Args:
        con: A connection from :func:`connect`.
        concept_id: The concept.
        limit: Most rows to return.
    """
    return con.sql(
        "SELECT shard, key, caption FROM hits WHERE list_contains(text_concept_ids, ?) "
        "ORDER BY shard, key LIMIT ?",
        params=[concept_id, limit],
    ).to_arrow_table()
