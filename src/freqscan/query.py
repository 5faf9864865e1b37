"""Ad hoc SQL over an output's tables with DuckDB.

The tables are opened through deltalake at the versions a run committed and handed to DuckDB as
Arrow datasets, so no DuckDB extension (and no network) is needed, and a query never sees a
half-committed run.

Other outputs can be attached next to the main one: each becomes a DuckDB schema holding the
same views (``cc3m.frequencies``, ``cc3m.hits``...), so one query can join two datasets or two
versions of one dataset.

A query is read-only and sees only those views: it must be one SELECT (DuckDB's parser decides),
and once the views exist the connection reaches no file, extension or Python object.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from freqscan.errors import UserError
from freqscan.history import resolve_version
from freqscan.names import VIEWS
from freqscan.tables.store import OutputStore

# The one statement type a query may be. It covers WITH, FROM-first, VALUES, DESCRIBE, SHOW,
# SUMMARIZE, UNPIVOT and PIVOT with an IN list (without one, PIVOT first creates a type). EXPLAIN is
# left out because EXPLAIN ANALYZE runs whatever it wraps (CREATE TABLE too); PRAGMA and CALL
# because some set options, and their table functions can be selected from instead.
QUERY_STATEMENT = duckdb.StatementType.SELECT

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names DuckDB already gives a catalog or schema; an attached output may not shadow them.
_RESERVED = frozenset({"main", "temp", "memory", "system", "information_schema", "pg_catalog"})


class AttachError(UserError, ValueError):
    """An ``--attach`` option or ``attach`` entry that cannot name a schema or an output."""


class QueryError(UserError, ValueError):
    """SQL that is not one read-only query over the views, or that reaches outside them."""


def connect(
    out: str, run_id: str | None = None, attach: Mapping[str, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """A read-only DuckDB connection with one view per table of ``out`` (latest or given run).

    Once the views exist the connection can read no file (``read_csv``, ``COPY``, ``ATTACH``),
    load no extension and see no Python object, and its configuration is locked so that no
    statement can undo that.

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
        _lock(con)
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
        if name in snapshot:  # outputs written before caption_keys existed lack it
            con.from_arrow(snapshot[name]).create_view(name)
    con.execute("USE main")


def _lock(con: duckdb.DuckDBPyConnection) -> None:
    # The views scan their Arrow datasets through pyarrow, which this setting does not govern;
    # it also turns off DuckDB's scans of Python variables by name.
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def run_query(
    out: str, sql: str, run_id: str | None = None, attach: Mapping[str, str] | None = None
) -> pa.Table:
    """Run one query over the output's views (and attached outputs'); the result as Arrow.

    Args:
        out: The output directory.
        sql: One SELECT statement (see :data:`QUERY_STATEMENT`); a trailing ``;`` is fine.
        run_id: Read ``out`` as of this run; the latest succeeded run by default.
        attach: Other outputs as schemas, as in :func:`connect`.

    Raises:
        QueryError: ``sql`` is empty, holds more than one statement or one that is not a
            query, or reaches a file, extension or setting.
        AttachError: As in :func:`connect`.
        OutputError: An output or a version does not exist.
        duckdb.Error: The query fails otherwise (syntax, unknown column...).
    """
    statement = _one_query(sql)
    con = connect(out, run_id, attach)
    try:
        return con.sql(statement).to_arrow_table()
    except duckdb.PermissionException as exc:
        raise QueryError(
            f"refused: a query reads only the output's views, no file or extension ({exc})"
        ) from None
    finally:
        con.close()


def _one_query(sql: str) -> duckdb.Statement:
    """The one read-only statement ``sql`` holds, parsed by DuckDB.

    Raises:
        QueryError: ``sql`` is empty, or holds more than one statement or one that is not a query.
        duckdb.ParserException: ``sql`` is not valid SQL.
    """
    statements = duckdb.extract_statements(sql)
    if not statements:
        raise QueryError(f"empty query: give one SELECT statement over {', '.join(VIEWS)}")
    if len(statements) > 1:
        raise QueryError(f"{len(statements)} statements given: run one query at a time")
    statement = statements[0]
    if statement.type != QUERY_STATEMENT:
        raise QueryError(
            "only SELECT queries are run (also WITH, DESCRIBE, SHOW, SUMMARIZE, PIVOT ... IN); "
            f"this is a {statement.type.name} statement"
        )
    return statement


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
