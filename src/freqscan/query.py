"""Ad hoc SQL over an output's tables with DuckDB.

The tables are opened through deltalake at the versions a run committed and handed to DuckDB as
Arrow datasets, so no DuckDB extension (and no network) is needed, and a query never sees a
half-committed run.

Other outputs can be attached next to the main one: each becomes a DuckDB schema holding the
same views (``cc3m.frequencies``, ``cc3m.hits``...), so one query can join two datasets or two
versions of one dataset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from freqscan.history import resolve_version
from freqscan.tables.store import OutputStore

# Views every query can use, in the order `freqscan query --help` lists them.
VIEWS: tuple[str, ...] = ("frequencies", "shards", "hits", "runs", "shard_counts")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names DuckDB already gives a catalog or schema; an attached output may not shadow them.
_RESERVED = frozenset({"main", "temp", "memory", "system", "information_schema", "pg_catalog"})


class AttachError(ValueError):
    """An ``--attach`` option or ``attach`` entry that cannot name a schema or an output."""


def connect(
    out: str, run_id: str | None = None, attach: Mapping[str, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per table of ``out`` (latest or given run).

    Args:
        out: The output directory.
        run_id: Read ``out`` as of this run; the latest succeeded run by default.
        attach: Schema name -> another output, ``DIR`` or ``DIR@VERSION``, where VERSION is
            anything ``freqscan history`` resolves (a version number, ``vN``, a run id,
            ``latest``, ``previous``); its views are ``NAME.frequencies``, ``NAME.hits``...
            The text after the last ``@`` is a version unless it holds a ``/``, so a path
            that contains ``@`` is written ``DIR@latest``.

    Raises:
        AttachError: A name is not a plain SQL identifier, is reserved or repeats.
        OutputError: An output or a version does not exist.
    """
    attach = attach or {}
    _check_names(list(attach))
    con = duckdb.connect()
    try:
        _create_views(con, OutputStore(out).snapshot(run_id), "main")
        for name, spec in attach.items():
            where, version = _split_version(spec)
            pinned = resolve_version(where, version).run_id if version else None
            con.execute(f'CREATE SCHEMA "{name}"')
            _create_views(con, OutputStore(where).snapshot(pinned), name)
    except BaseException:
        con.close()
        raise
    return con


def parse_attach(options: Iterable[str]) -> dict[str, str]:
    """``NAME=DIR[@VERSION]`` options (the CLI's ``--attach``) as :func:`connect`'s ``attach``."""
    pairs = []
    for option in options:
        name, sep, spec = option.partition("=")
        if not sep or not spec:
            raise AttachError(f"--attach {option!r}: expected NAME=DIR or NAME=DIR@VERSION")
        pairs.append((name, spec))
    _check_names([name for name, _ in pairs])
    return dict(pairs)


def _check_names(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if not _IDENTIFIER.fullmatch(name):
            raise AttachError(
                f"attach name {name!r} is not a SQL identifier ([A-Za-z_][A-Za-z0-9_]*)"
            )
        # DuckDB folds identifiers: names differing only in case would be one schema.
        folded = name.lower()
        if folded in _RESERVED:
            raise AttachError(f"attach name {name!r} is reserved by DuckDB; choose another")
        if folded in seen:
            raise AttachError(f"attach name {name!r} is given twice")
        seen.add(folded)


def _split_version(spec: str) -> tuple[str, str | None]:
    where, sep, version = spec.rpartition("@")
    if not sep or not where or not version or "/" in version:
        return spec, None
    return where, version


def _create_views(
    con: duckdb.DuckDBPyConnection, snapshot: dict[str, pads.Dataset], schema: str
) -> None:
    # A relation's view is created in the current schema and keeps its dataset alive.
    con.execute(f'USE "{schema}"')
    for name in VIEWS:
        con.from_arrow(snapshot[name]).create_view(name)
    con.execute("USE main")


def run_query(
    out: str, sql: str, run_id: str | None = None, attach: Mapping[str, str] | None = None
) -> pa.Table:
    """Run ``sql`` over the output's views (and attached outputs'); the result as Arrow."""
    con = connect(out, run_id, attach)
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
