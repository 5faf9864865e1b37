"""A count into an output whose current version counted another input or configuration is
refused (it would become the next version, and `diff` would compare different datasets), unless
`--force`; the same count again is not."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_SHARDS
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.query import run_query
from freqscan.tables.progress import PROGRESS_DIR

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.timeout(600)]


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def test_another_configuration_is_refused_in_one_line_unless_forced(tmp_path):
    rows = pq.read_table(SAMPLE_SHARDS[0]).slice(0, 400)
    for i in range(2):
        pq.write_table(rows.slice(i * 200, 200), tmp_path / f"part-{i}.parquet")
    (tmp_path / "concepts.txt").write_text("dog\ncat\nwoman\nshirt\n")
    out = str(tmp_path / "out")
    count = ["count", "--out", out, "--concepts", str(tmp_path / "concepts.txt")]
    count += ["--input", str(tmp_path / "part-0.parquet"), "--workers", "1"]

    invoke(*count)
    invoke(*count)  # the same count again: a new version of the same dataset
    (first, again) = run_query(out, "SELECT run_id FROM runs ORDER BY finished_at").to_pylist()

    other = [*count, "--input", str(tmp_path / "part-1.parquet"), "--method", "paper"]
    refused = invoke(*other, code=2)
    (line,) = refused.strip().splitlines()  # after the blank line the progress display leaves
    assert line == (
        f"error: {out}: its current version, run {again['run_id']}, counted another input or "
        f"configuration: source.input: ['{tmp_path}/part-0.parquet'] -> "
        f"['{tmp_path}/part-0.parquet', '{tmp_path}/part-1.parquet']; text.method: "
        "'normalized' -> 'paper'. This count would become its next version and `freqscan diff` "
        "would compare different datasets: count into another --out, or pass --force to "
        "append it anyway"
    )
    # Refused before anything was read or written for it.
    assert len(run_query(out, "SELECT run_id FROM runs").to_pylist()) == 2
    assert not list((tmp_path / "out" / PROGRESS_DIR).iterdir())

    invoke(*other, "--force")
    runs = run_query(
        out, "SELECT run_id, status, shards_total, method FROM runs ORDER BY finished_at"
    )
    assert [(r["status"], r["shards_total"], r["method"]) for r in runs.to_pylist()] == [
        ("succeeded", 1, "normalized"),
        ("succeeded", 1, "normalized"),
        ("succeeded", 2, "paper"),
    ]
    assert runs.column("run_id").to_pylist()[:2] == [first["run_id"], again["run_id"]]
    # --force decides no count: the forced configuration is now the one a plain re-run matches.
    invoke(*other)
    assert len(run_query(out, "SELECT run_id FROM runs").to_pylist()) == 4
