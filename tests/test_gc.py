"""`freqscan gc`: what killed and failed runs left is removed, every version stays readable, and
a killed run's progress stays while re-running its command would resume it."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_SHARDS
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.counting.shard import ShardOutcome
from freqscan.counting.tally import ShardTally
from freqscan.query import VIEWS, run_query
from freqscan.records import ShardInfo, ShardStats
from freqscan.runtime.pipeline import hits_filename
from freqscan.tables.lease import OutputLease
from freqscan.tables.progress import PROGRESS_DIR, RunProgress, ShardResult
from freqscan.tables.store import write_data_file

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.timeout(600)]

KILLED = "20300101T000000Z-k111ed"  # a count killed after its first shard
FAILED = "20300101T000001Z-fa11ed"  # a run that failed (or died) leaving a hits file
CUT = "20300101T000002Z-c00000"  # a count killed while writing its run.json


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def every_version(out: Path) -> dict[str, dict[str, list[tuple]]]:
    """Run id -> view -> its rows, for every version `history` lists."""
    runs = run_query(str(out), "SELECT run_id FROM runs WHERE status = 'succeeded'")
    return {
        run: {
            view: sorted(map(repr, run_query(str(out), f"SELECT * FROM {view}", run).to_pylist()))
            for view in VIEWS
        }
        for run in runs.column("run_id").to_pylist()
    }


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in [path, *path.rglob("*")] if p.is_file())


def leave_a_killed_run(out: Path) -> list[Path]:
    """What a count killed after its first shard leaves, written by the classes a count writes
    it with: its progress folder (run.json and the shard's marker) and the shard's files."""
    info = ShardInfo(str(out.parent / "part-0.parquet"), 1)
    state = RunProgress.open(str(out), "the killed run's fingerprint", KILLED, [info], ())
    name = hits_filename(KILLED, info.path)
    files = {}
    for table in ("hits", "caption_keys"):
        rows = pq.read_table(next((out / table).glob("*.parquet")))  # real rows of a version
        files[table] = write_data_file(str(out), table, name, rows)
    outcome = ShardOutcome(info.path, stats=ShardStats(rows.num_rows, rows.num_rows))
    state.record(ShardResult(info, outcome, ShardTally(), files["hits"], files["caption_keys"]))
    return [out / PROGRESS_DIR / KILLED, out / "hits" / name, out / "caption_keys" / name]


def test_gc_removes_what_no_version_needs_and_keeps_what_a_resume_needs(tmp_path):
    rows = pq.read_table(SAMPLE_SHARDS[0]).slice(0, 400)
    for i in range(2):
        pq.write_table(rows.slice(i * 200, 200), tmp_path / f"part-{i}.parquet")
    (tmp_path / "v1.txt").write_text("dog\ncat\nwoman\n")
    (tmp_path / "v2.txt").write_text("dog\nshirt\nman\n")
    out = tmp_path / "out"
    count = ["count", "--input", str(tmp_path / "part-0.parquet"), "--input"]
    count += [str(tmp_path / "part-1.parquet"), "--out", str(out), "--workers", "1"]
    invoke(*count, "--concepts", str(tmp_path / "v1.txt"))
    # Another concept set: v2 replaces every file of v1, which only v1's versions reference.
    invoke(*count, "--concepts", str(tmp_path / "v2.txt"), "--force")
    v1 = run_query(str(out), "SELECT min(run_id) FROM runs").column(0)[0].as_py()
    versions = every_version(out)
    assert len(versions) == 2

    killed = leave_a_killed_run(out)
    info = ShardInfo(str(tmp_path / "part-1.parquet"), 1)
    orphan = write_data_file(
        str(out), "hits", hits_filename(FAILED, info.path), pq.read_table(killed[1])
    )
    (out / PROGRESS_DIR / CUT / "shards").mkdir(parents=True)
    (out / PROGRESS_DIR / CUT / "run.json").write_text('{"fingerpr')
    RunProgress.open(str(out), "fp", v1, [], ())  # v1 committed, then died before cleaning up
    garbage = [out / PROGRESS_DIR / v1, out / PROGRESS_DIR / CUT, out / "hits" / orphan.path]
    sizes = [size(path) for path in garbage]
    expected = [
        f"removed {garbage[0]} ({sizes[0]:,} bytes): progress of run {v1}, which ended",
        f"removed {garbage[1]} ({sizes[1]:,} bytes): progress of run {CUT}, which died before "
        "it could be resumed",
        f"removed {garbage[2]} ({sizes[2]:,} bytes): no version references it",
        f"kept what unfinished run {KILLED} left: re-running its command resumes it "
        "(--include-unfinished removes it)",
        f"{out}: removed 3 files and folders, {sum(sizes):,} bytes",
    ]

    dry = invoke("gc", str(out), "--dry-run").splitlines()
    assert dry == [line.replace("removed", "would remove", 1) for line in expected]
    assert all(path.exists() for path in garbage + killed)

    assert invoke("gc", str(out)).splitlines() == expected
    assert not any(path.exists() for path in garbage)
    assert all(path.exists() for path in killed)
    assert every_version(out) == versions

    sizes = [size(path) for path in killed]
    assert invoke("gc", str(out), "--include-unfinished").splitlines() == [
        f"removed {killed[0]} ({sizes[0]:,} bytes): progress of unfinished run {KILLED} "
        "(--include-unfinished)",
        f"removed {killed[1]} ({sizes[1]:,} bytes): no version references it",
        f"removed {killed[2]} ({sizes[2]:,} bytes): no version references it",
        f"{out}: removed 3 files and folders, {sum(sizes):,} bytes",
    ]
    assert not any(path.exists() for path in killed)
    assert every_version(out) == versions
    assert invoke("gc", str(out)).splitlines() == [f"{out}: removed 0 files and folders, 0 bytes"]


def test_gc_never_races_a_writer_and_refuses_what_is_no_output(tmp_path):
    (tmp_path / "in.parquet").write_bytes(Path(SAMPLE_SHARDS[0]).read_bytes())
    out = tmp_path / "out"
    (tmp_path / "c.txt").write_text("dog\n")
    invoke("count", "--input", str(tmp_path / "in.parquet"), "--out", str(out), "--concepts",
           str(tmp_path / "c.txt"), "--workers", "1")  # fmt: skip
    with OutputLease.acquire(str(out), "20300101T000003Z-bu5y00"):
        busy = invoke("gc", str(out), code=2)
    assert f"error: {out} is being written by run 20300101T000003Z-bu5y00" in busy
    nothing = invoke("gc", str(tmp_path), code=2)
    assert nothing.strip() == f"error: {tmp_path}: no freqscan output here (no runs table)"
