"""The output store: atomic commits, snapshots pinned by the runs table, crash leaves no trace."""

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from freqscan.tables.schemas import FREQUENCIES, HITS, RUNS
from freqscan.tables.store import OutputError, OutputStore, write_data_file


def _freq(run_id: str, count: int) -> pa.Table:
    row = {f.name: None for f in FREQUENCIES}
    row.update(concept_id=1, concept="dog", concept_datasets=[], text_count=count, run_id=run_id)
    return pa.Table.from_pylist([row], schema=FREQUENCIES)


def _hits(run_id: str, keys: list[str]) -> pa.Table:
    rows = [
        {
            "shard": "s",
            "key": k,
            "url": None,
            "caption": "a dog",
            "metadata": None,
            "text_concept_ids": [1],
            "run_id": run_id,
        }
        for k in keys
    ]
    return pa.Table.from_pylist(rows, schema=HITS)


def _commit_run(store: OutputStore, run_id: str, count: int, keys: list[str]) -> None:
    hits = write_data_file(store.out, "hits", f"part-{run_id}.parquet", _hits(run_id, keys))
    versions = {
        "hits": store.commit_files("hits", [hits]),
        "frequencies": store.replace("frequencies", _freq(run_id, count)),
    }
    row = {f.name: None for f in RUNS}
    now = datetime.now(UTC)
    row.update(
        run_id=run_id,
        status="succeeded",
        started_at=now,
        finished_at=now,
        table_versions=json.dumps(versions),
    )
    store.append_run(row)


def _count(store: OutputStore, run_id=None) -> tuple[int, int]:
    snap = store.snapshot(run_id)
    freq = snap["frequencies"].to_table().to_pylist()
    return freq[0]["text_count"], snap["hits"].count_rows()


def test_a_run_becomes_visible_only_with_its_runs_row(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    with pytest.raises(OutputError, match="no freqscan output"):
        store.snapshot()
    _commit_run(store, "r1", 3, ["a", "b", "c"])
    assert _count(store) == (3, 3)

    # A second run dies after committing two tables but before its runs row: readers keep r1.
    hits = write_data_file(store.out, "hits", "part-r2.parquet", _hits("r2", ["a"]))
    store.commit_files("hits", [hits])
    store.replace("frequencies", _freq("r2", 1))
    assert _count(store) == (3, 3)

    _commit_run(store, "r3", 5, ["a", "b", "c", "d", "e"])
    assert _count(store) == (5, 5)
    assert _count(store, "r1") == (3, 3)  # history stays readable


def test_uncommitted_worker_files_are_invisible(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    _commit_run(store, "r1", 2, ["a", "b"])
    write_data_file(store.out, "hits", "part-orphan.parquet", _hits("orphan", ["x"] * 10))
    assert _count(store) == (2, 2)


def test_rewriting_a_file_is_idempotent(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    first = write_data_file(store.out, "hits", "part-r1.parquet", _hits("r1", ["a", "b"]))
    again = write_data_file(store.out, "hits", "part-r1.parquet", _hits("r1", ["a", "b"]))
    assert (first.path, first.num_rows, first.size) == (again.path, again.num_rows, again.size)
    store.commit_files("hits", [again])
    assert store.commit_files("hits", [again]) == 1
    from deltalake import DeltaTable

    assert DeltaTable(store.table_uri("hits")).to_pyarrow_table().num_rows == 2
