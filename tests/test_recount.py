"""`freqscan recount`: only added and changed shards are read; the result equals a fresh count."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_SHARDS
from deltalake import DeltaTable
from processkit import kill_session
from shardkit import truncate_file, write_webdataset_shard
from tablekit import assert_same_tables, comparable_tables
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.query import run_query
from freqscan.tables.progress import PROGRESS_DIR
from freqscan.tables.schemas import TABLES

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local"), pytest.mark.timeout(600)]

SHARDS = 6
ROWS = 300


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def rows():
    return pq.read_table(SAMPLE_SHARDS[0]).slice(0, (SHARDS + 2) * ROWS)


def write_shards(directory: Path, rows, indices) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i in indices:
        pq.write_table(rows.slice(i * ROWS, ROWS), directory / f"part-{i:05d}.parquet")


def count(shards: Path, out: Path, *extra: str) -> str:
    return invoke("count", "--input", str(shards), "--out", str(out), "--dataset-name", "t", *extra)


def runs(out: Path) -> list[dict]:
    return run_query(str(out), "SELECT * FROM runs ORDER BY finished_at").to_pylist()


def change_the_input(shards: Path, rows) -> None:
    """Add a shard, rewrite one (other rows, other size), delete one."""
    write_shards(shards, rows, [SHARDS])
    pq.write_table(rows.slice(SHARDS * ROWS + ROWS, ROWS // 2), shards / "part-00001.parquet")
    (shards / "part-00002.parquet").unlink()


def test_recount_reads_only_added_and_changed_shards_and_equals_a_fresh_count(tmp_path, rows):
    shards, out = tmp_path / "shards", tmp_path / "out"
    write_shards(shards, rows, range(SHARDS))
    count(shards, out)
    change_the_input(shards, rows)

    plan = invoke("recount", str(out), "--dry-run")
    assert "added 1" in plan and "changed 1" in plan and "removed 1" in plan
    assert f"unchanged {SHARDS - 2}" in plan
    assert len(runs(out)) == 1  # a dry run commits nothing

    printed = invoke("recount", str(out))
    assert "read 2 shards" in printed
    first, recount = runs(out)
    assert recount["kind"] == "recount" and recount["parent_run_id"] == first["run_id"]
    assert recount["shards_total"] == SHARDS and recount["shards_reused"] == SHARDS - 2

    fresh = tmp_path / "fresh"
    count(shards, fresh)
    assert_same_tables(out, fresh)

    again = invoke("recount", str(out))
    assert "nothing changed" in again
    assert len(runs(out)) == 2


def test_a_recount_with_another_configuration_is_refused_unless_full(tmp_path, rows):
    shards, out = tmp_path / "shards", tmp_path / "out"
    write_shards(shards, rows, range(3))
    count(shards, out)
    refused = invoke("recount", str(out), "--method", "paper", code=2)
    assert "text.method: 'normalized' -> 'paper'" in refused and "--full" in refused
    assert len(runs(out)) == 1

    invoke("recount", str(out), "--method", "paper", "--full")
    assert runs(out)[-1]["shards_reused"] == 0
    fresh = tmp_path / "fresh"
    count(shards, fresh, "--method", "paper")
    assert_same_tables(out, fresh)


def test_a_killed_recount_leaves_the_previous_version_readable(tmp_path, rows):
    shards, out = tmp_path / "shards", tmp_path / "out"
    write_shards(shards, rows, range(SHARDS))
    count(shards, out)
    before = comparable_tables(out)
    for i in range(SHARDS):  # every shard changed: the recount has work for a while
        path = shards / f"part-{i:05d}.parquet"
        pq.write_table(rows.slice(i * ROWS + 1, ROWS - 1), path)

    job = subprocess.Popen(
        [sys.executable, "-m", "freqscan", "recount", str(out), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not list((out / PROGRESS_DIR).glob("*/shards/*.json")):
        assert job.poll() is None, job.stdout.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kill_session(job)
    assert comparable_tables(out) == before
    assert len(runs(out)) == 1

    invoke("recount", str(out))
    fresh = tmp_path / "fresh"
    count(shards, fresh)
    assert_same_tables(out, fresh)


def test_the_scheduled_recount_job_is_idempotent(tmp_path, rows):
    shards, out = tmp_path / "shards", tmp_path / "out"
    write_shards(shards, rows, range(3))
    count(shards, out)
    write_shards(shards, rows, [3])
    job = [sys.executable, str(Path(__file__).parents[1] / "jobs" / "recount.py"), str(out)]

    statuses = []
    for _ in range(2):
        done = subprocess.run(job, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        statuses.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert statuses[0]["status"] == "updated" and statuses[0]["added"] == 1
    assert statuses[1]["status"] == "unchanged" and statuses[1]["run_id"] is None
    assert statuses[1]["parent_run_id"] == statuses[0]["run_id"]
    assert len(runs(out)) == 2

    refused = subprocess.run(
        [*job, "--input", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300
    )
    assert (
        refused.returncode == 2
        and json.loads(refused.stdout.strip().splitlines()[-1])["status"] == "refused"
    )


def write_tars(directory: Path, rows, indices, truncated: bool = False) -> None:
    """Webdataset shards of real captions; a truncated one fails to read (``truncated_tar``)."""
    directory.mkdir(parents=True, exist_ok=True)
    captions = rows.column("TEXT").to_pylist()
    for i in indices:
        samples = [
            {"key": f"{i:05d}{j:04d}", "txt": captions[i * 20 + j] or "", "jpg": b"x" * 4096}
            for j in range(20)
        ]
        write_webdataset_shard(directory / f"{i:05d}.tar", samples)
        if truncated:
            truncate_file(directory / f"{i:05d}.tar", 30_000)


def table_versions(out: Path) -> dict[str, int]:
    """The latest Delta version of every table: any commit moves one."""
    return {name: DeltaTable(str(out / name)).version() for name in TABLES}


def failed_shards(out: Path) -> list[dict]:
    sql = "SELECT shard, status, error_reason, error FROM shards WHERE status <> 'ok'"
    return run_query(str(out), sql).to_pylist()


def test_an_unchanged_failed_shard_stays_failed_until_retry_failed(tmp_path, rows):
    shards, out = tmp_path / "shards", tmp_path / "out"
    write_tars(shards, rows, [0, 1])
    write_tars(shards, rows, [2], truncated=True)
    (tmp_path / "concepts.txt").write_text("dog\ncat\nwoman\nman\nshirt\n")
    count(shards, out, "--concepts", str(tmp_path / "concepts.txt"))
    (failed,) = failed_shards(out)
    assert (failed["shard"], failed["error_reason"]) == (str(shards / "00002.tar"), "truncated_tar")
    versions = table_versions(out)

    again = invoke("recount", str(out))
    assert "unchanged 3;" in again and "nothing changed since run" in again
    assert "1 unchanged shards failed in run" in again and "--retry-failed" in again
    assert len(runs(out)) == 1 and table_versions(out) == versions

    # Another shard arrives: the failed one is carried over, failed for the same reason.
    write_tars(shards, rows, [3])
    printed = invoke("recount", str(out))
    assert "added 1" in printed and "read 1 shards" in printed
    assert f"failed shard {shards / '00002.tar'}: truncated_tar" in printed
    assert failed_shards(out) == [failed]
    (_, recounted) = runs(out)
    assert (recounted["shards_reused"], recounted["shards_failed"]) == (3, 1)
    fresh = tmp_path / "fresh"
    count(shards, fresh, "--concepts", str(tmp_path / "concepts.txt"))
    assert_same_tables(out, fresh)

    versions = table_versions(out)
    assert "nothing changed since run" in invoke("recount", str(out))
    assert len(runs(out)) == 2 and table_versions(out) == versions

    retried = invoke("recount", str(out), "--retry-failed")
    assert "changed 1," in retried and "read 1 shards" in retried
    assert f"changed: {shards / '00002.tar'}" in retried
    last = runs(out)[-1]
    assert (last["kind"], last["shards_reused"], last["shards_failed"]) == ("recount", 3, 1)
    assert failed_shards(out) == [failed]  # the same bytes fail the same way


def test_relative_paths_are_recorded_absolute_so_recount_works_anywhere(
    tmp_path, rows, monkeypatch
):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_shards(here / "shards", rows, range(3))
    (here / "concepts.txt").write_text("dog\ncat\nwoman\nman\nshirt\n")
    monkeypatch.chdir(here)
    invoke("count", "--input", "shards", "--concepts", "concepts.txt", "--out", "out")
    (run,) = runs(here / "out")
    recorded = json.loads(run["config"])
    assert (recorded["source"]["input"], recorded["concepts"], recorded["out"]) == (
        [str(here / "shards")],
        str(here / "concepts.txt"),
        str(here / "out"),
    )

    write_shards(here / "shards", rows, [3])
    monkeypatch.chdir(elsewhere)
    printed = invoke("recount", str(here / "out"))
    assert "added 1" in printed and "unchanged 3" in printed and "read 1 shards" in printed
    fresh = tmp_path / "fresh"
    invoke("count", "--input", str(here / "shards"), "--concepts", str(here / "concepts.txt"),
           "--out", str(fresh))  # fmt: skip
    assert_same_tables(here / "out", fresh)
