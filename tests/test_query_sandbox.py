"""`freqscan query` and `run_query` are read-only and see only the output's views: no file, no
extension, no setting, no Python variable, one SELECT per query; `connect` is locked the same way.

One output (four captions, four concepts, the paper's method) is counted once for the module.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from shardkit import write_caption_parquet
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.concepts import concept_id
from freqscan.query import VIEWS, QueryError, concept_examples, connect, run_query

CAPTIONS = ["a dog on a sofa", "two dogs and a cat", "a red car", "a cat"]
OUTSIDE = "refused: a query reads only the output's views, no file or extension"
NOT_A_QUERY = "only SELECT queries are run (also WITH, DESCRIBE, SHOW, SUMMARIZE, PIVOT ... IN)"


@pytest.fixture(scope="module")
def out(ray_local, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("sandbox")
    write_caption_parquet(root / "in.parquet", CAPTIONS)
    (root / "concepts.txt").write_text("dog\ncat\ncar\nsofa\n")
    (root / "secret.csv").write_text("secret\nhunter2\n")
    out = str(root / "out")
    count = ["count", "--input", str(root / "in.parquet"), "--format", "parquet", "--out", out]
    count += ["--concepts", str(root / "concepts.txt"), "--method", "paper", "--workers", "1"]
    result = CliRunner().invoke(app, count)
    assert result.exit_code == 0, result.output
    return out


def outside(out: str) -> Path:
    """A file next to the output that a query must not read."""
    return Path(out).parent / "secret.csv"


def rows(out: str, sql: str, **kwargs) -> list[dict]:
    return run_query(out, sql, **kwargs).to_pylist()


def refused(*args: str) -> str:
    """The one line a refused `freqscan` command prints (exit code 2, no traceback)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    (line,) = result.output.splitlines()
    return line


def test_a_join_with_a_cte_and_a_trailing_semicolon_works(out):
    sql = (
        "WITH dog AS (SELECT concept_id FROM frequencies WHERE concept = 'dog')"
        " SELECT h.key, h.caption, s.samples_counted FROM hits h"
        " JOIN dog ON list_contains(h.text_concept_ids, dog.concept_id)"
        " JOIN shards s ON s.shard = h.shard ORDER BY h.key ;"
    )
    assert rows(out, sql) == [
        {"key": "0", "caption": "a dog on a sofa", "samples_counted": 4},
        {"key": "1", "caption": "two dogs and a cat", "samples_counted": 4},
    ]


def test_every_view_is_there_and_caption_keys_can_be_read(out):
    assert {r["name"] for r in rows(out, "SHOW TABLES")} == set(VIEWS)
    assert "caption_keys" in VIEWS
    with_dog = "SELECT key FROM caption_keys WHERE list_contains(nouns, 'dog') ORDER BY key"
    assert rows(out, with_dog) == [{"key": "0"}, {"key": "1"}]
    assert rows(out, "SELECT count(*) AS n FROM caption_keys") == [{"n": len(CAPTIONS)}]


def test_attached_outputs_still_work(out):
    sql = (
        "SELECT concept, a.text_count AS here, b.text_count AS there FROM frequencies a"
        " JOIN other.frequencies b USING (concept) ORDER BY concept"
    )
    assert rows(out, sql, attach={"other": out}) == [
        {"concept": "car", "here": 1, "there": 1},
        {"concept": "cat", "here": 2, "there": 2},
        {"concept": "dog", "here": 2, "there": 2},
        {"concept": "sofa", "here": 1, "there": 1},
    ]
    with pytest.raises(QueryError, match=OUTSIDE):
        run_query(out, f"SELECT * FROM read_csv('{outside(out)}')", attach={"other": out})


@pytest.mark.parametrize(
    "reader",
    [
        "read_csv('{file}')",
        "'{file}'",  # DuckDB reads a quoted path as a table
        "read_text('{file}')",
        "read_parquet('{parquet}')",
        "glob('{dir}/*')",
        "read_csv('/etc/passwd')",
    ],
)
def test_files_outside_the_output_are_refused(out, reader):
    table = reader.format(
        file=outside(out), parquet=Path(out).parent / "in.parquet", dir=Path(out).parent
    )
    with pytest.raises(QueryError, match=OUTSIDE) as info:
        run_query(out, f"SELECT * FROM {table}")
    assert "file system operations are disabled by configuration" in str(info.value)


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("COPY (SELECT 1) TO '{dir}/copied.csv'", "COPY"),
        ("EXPORT DATABASE '{dir}/exported'", "EXPORT"),
        ("DROP VIEW frequencies", "DROP"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("INSERT INTO frequencies SELECT * FROM frequencies", "INSERT"),
        ("UPDATE frequencies SET text_count = 0", "UPDATE"),
        ("DELETE FROM frequencies", "DELETE"),
        ("SET enable_external_access = true", "SET"),
        ("RESET lock_configuration", "SET"),
        ("USE other", "SET"),
        ("ATTACH '{dir}/x.db'", "ATTACH"),
        ("DETACH other", "DETACH"),
        ("INSTALL httpfs", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        ("PRAGMA show_tables", "PRAGMA"),
        ("CALL pragma_version()", "CALL"),
        ("EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", "EXPLAIN"),
        ("BEGIN TRANSACTION", "TRANSACTION"),
        ("PIVOT frequencies ON concept USING sum(text_count)", "MULTI"),
    ],
)
def test_statements_that_are_not_queries_are_refused(out, sql, kind):
    root = Path(out).parent
    before = sorted(root.iterdir())
    with pytest.raises(QueryError) as info:
        run_query(out, sql.format(dir=root))
    assert str(info.value) == f"{NOT_A_QUERY}; this is a {kind} statement"
    assert sorted(root.iterdir()) == before  # nothing copied, exported or attached
    assert rows(out, "SELECT count(*) AS n FROM frequencies") == [{"n": 4}]


@pytest.mark.parametrize("sql", ["", "   \n\t", ";", " ; ;", "-- only a comment"])
def test_an_empty_query_is_refused(out, sql):
    with pytest.raises(QueryError, match=r"^empty query: give one SELECT statement over "):
        run_query(out, sql)


def test_one_statement_per_query(out):
    with pytest.raises(QueryError, match=r"^2 statements given: run one query at a time$"):
        run_query(out, "SELECT 1; DROP VIEW frequencies")
    assert rows(out, "SELECT count(*) AS n FROM frequencies") == [{"n": 4}]


def test_connect_is_locked_and_its_internal_queries_work(out):
    secret = pa.table({"secret": ["hunter2"]})  # DuckDB would otherwise scan it by name
    con = connect(out, attach={"other": out})
    try:
        with pytest.raises(duckdb.CatalogException, match="Table with name secret does not exist"):
            con.sql("SELECT * FROM secret")
        assert secret.num_rows == 1
        with pytest.raises(duckdb.PermissionException):
            con.sql(f"SELECT * FROM read_csv('{outside(out)}')")
        for setting in ("enable_external_access", "lock_configuration", "threads"):
            with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
                con.execute(f"RESET {setting}")
        got = concept_examples(con, concept_id("cat"), 5).to_pylist()
        assert [(r["key"], r["caption"]) for r in got] == [
            ("1", "two dogs and a cat"),
            ("3", "a cat"),
        ]
        assert con.sql("SELECT count(*) FROM other.hits").fetchall() == [(len(CAPTIONS),)]
    finally:
        con.close()


def test_the_cli_prints_one_line_and_exits_2(out):
    copied = Path(out).parent / "cli-copied.csv"
    assert refused("query", out, f"COPY (SELECT 1) TO '{copied}'") == (
        f"error: {NOT_A_QUERY}; this is a COPY statement"
    )
    assert not copied.exists()
    assert refused("query", out, "DROP VIEW frequencies") == (
        f"error: {NOT_A_QUERY}; this is a DROP statement"
    )
    line = refused("query", out, f"SELECT * FROM read_csv('{outside(out)}')")
    assert line.startswith(f"error: {OUTSIDE} (Permission Error: Cannot access file")
    assert refused("query", out, "  ") == (
        f"error: empty query: give one SELECT statement over {', '.join(VIEWS)}"
    )
    assert refused("query", out, "SELECT 1; SELECT 2") == (
        "error: 2 statements given: run one query at a time"
    )
    sofa = "SELECT key FROM caption_keys WHERE list_contains(nouns, 'sofa')"
    result = CliRunner().invoke(app, ["query", out, sofa, "--csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["key", "0"]
