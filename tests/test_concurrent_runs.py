"""Two runs writing one output at once, through the CLI as users run it.

Exactly one of two counts started together gets the output's writer lease; the other is refused
at once (exit 2, naming the run that writes) and writes nothing, so the tables stay those of one
undisturbed count. A count started after the first finished takes the lease in turn.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_SHARDS
from shardkit import split_parquet
from tablekit import assert_same_tables

from freqscan.query import run_query
from freqscan.rethreshold import rethreshold
from freqscan.tables.lease import LEASE_DIR, OutputBusyError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SHARDS = 2
ROWS_PER_SHARD = 400
CONCEPTS = "dog\ncat\nwoman\nman\ncar\ndress\nshirt\ntable\nhouse\ntree\nflower\nshoe\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """SHARDS caption parquet shards of real LAION rows, and a small concept file."""
    base = tmp_path_factory.mktemp("concurrent")
    split_parquet(pq.read_table(SAMPLE_SHARDS[0]), base / "shards", ROWS_PER_SHARD, range(SHARDS))
    (base / "concepts.txt").write_text(CONCEPTS)
    return base / "shards", base / "concepts.txt"


def start_count(inputs: tuple[Path, Path], out: Path) -> subprocess.Popen[str]:
    shards, concepts = inputs
    command = [
        sys.executable, "-m", "freqscan", "count", "--input", str(shards), "--out", str(out),
        "--concepts", str(concepts), "--dataset-name", "laion-sample", "--workers", "1",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout + stderr


def counted_run_id(output: str) -> str:
    match = re.search(r"run (\S+) counted", output)
    assert match, output
    return match[1]


def lease_holder(out: Path) -> str | None:
    """The run holding the output's lease now, read from its files; None when it is free."""
    generations = sorted((out / LEASE_DIR).glob("*.json"))
    if not generations or generations[-1].with_suffix(".released").exists():
        return None
    return json.loads(generations[-1].read_text())["holder"]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    """The same count into a fresh directory, alone."""
    out = tmp_path_factory.mktemp("concurrent-reference") / "out"
    code, output = finish(start_count(inputs, out))
    assert code == 0, output
    return out


def test_two_counts_at_once_one_is_refused_and_the_tables_stay_whole(inputs, reference, tmp_path):
    out = tmp_path / "out"
    racers = [start_count(inputs, out) for _ in range(2)]
    results = [finish(p) for p in racers]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    (_, won), (_, refused) = sorted(results, key=lambda r: r[0])
    winner = counted_run_id(won)
    assert f"is being written by run {winner}" in refused, refused
    assert "Traceback" not in refused

    runs = run_query(str(out), "SELECT run_id, status FROM runs").to_pylist()
    assert runs == [{"run_id": winner, "status": "succeeded"}]
    assert_same_tables(out, reference)
    assert lease_holder(out) is None  # released on the way out

    # Serialized: a count after the first finished takes the lease in turn. While it holds it,
    # a rethreshold is refused before it reads anything, naming that count.
    second = start_count(inputs, out)
    deadline = time.monotonic() + 120
    while (holder := lease_holder(out)) is None:
        assert second.poll() is None, finish(second)
        assert time.monotonic() < deadline, "the second count never took the lease"
        time.sleep(0.05)
    with pytest.raises(OutputBusyError, match=f"is being written by run {holder}"):
        rethreshold(str(out), 0.6)
    code, output = finish(second)
    assert code == 0, output
    assert counted_run_id(output) == holder

    runs = run_query(str(out), "SELECT run_id, status FROM runs ORDER BY finished_at").to_pylist()
    assert [r["run_id"] for r in runs] == [winner, holder]
    assert {r["status"] for r in runs} == {"succeeded"}
    assert_same_tables(out, reference)
    assert lease_holder(out) is None
