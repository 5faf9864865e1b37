"""Versions of an output through the CLI: history, diff, queries of an older version, attached
outputs, locally and on S3.

Two outputs are built once per session (test_query_examples.py uses them too):

- ``laion``: real LAION captions, counted as v1 (2 shards), then a run that fails (a third,
  truncated shard with --max-failed-shards 0), then v2 (3 shards; one concept removed from the
  set and a few added);
- ``photos``: webdataset shards of real photos and captions tagged by a tiny RAM++ on CPU at
  0.7 (v1), then re-thresholded at 0.6 (v2).

Every expectation is computed here from the tables of the version it concerns.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_SHARDS
from imagekit import tagged_setup
from s3kit import BUCKET, aws_environment, moto_server
from shardkit import truncate_file
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.concepts import Concept, load_concepts
from freqscan.history import diff_versions, output_history, resolve_version
from freqscan.query import run_query
from freqscan.tables.store import OutputError

ROWS_PER_SHARD = 200
BENCHMARKS = {"cifar10", "cifar100"}
REMOVED = "man"  # in v1's concept set only
ADDED = ("shirt", "dress", "bag", "tree", "flower")  # in v2's only


@dataclass(frozen=True)
class Outputs:
    """The two outputs and the ids of their runs, oldest first."""

    laion: str
    laion_runs: list[str]  # v1, the failed run, v2
    photos: str
    photos_runs: list[str]  # v1 (count at 0.7), v2 (rethreshold at 0.6)
    concepts_v2: list[Concept]


def cli(*args: str) -> str:
    """Stdout of a successful command (stderr, such as diff's header in CSV mode, left out)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def refused(*args: str) -> str:
    """The message of a command refused as a user error."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def as_csv(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Rows as `--csv` writes them (None as an empty field)."""
    return [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]


def _concept_csv(path: Path, concepts: list[Concept]) -> str:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["concept", "datasets"])
        writer.writerows([c.name, ";".join(c.datasets)] for c in concepts)
    return str(path)


def _build(root: Path, laion_captions: list[str]) -> Outputs:
    rows = pq.read_table(SAMPLE_SHARDS[0]).slice(0, 3 * ROWS_PER_SHARD)
    shards = []
    for i in range(3):
        shards += ["--input", str(root / f"part-{i}.parquet")]
        pq.write_table(rows.slice(i * ROWS_PER_SHARD, ROWS_PER_SHARD), shards[-1])
    bad = root / "part-9-truncated.parquet"
    pq.write_table(rows.slice(0, ROWS_PER_SHARD), bad)
    truncate_file(bad, 2_000)
    paper = load_concepts()
    first = [c for c in paper if BENCHMARKS & set(c.datasets)]
    second = [c for c in first if c.name != REMOVED] + [paper.by_name(n) for n in ADDED]
    laion = str(root / "laion-out")
    count = ("count", "--format", "parquet", "--dataset-name", "laion", "--out", laion)
    count += ("--workers", "1")
    v1_concepts = _concept_csv(root / "v1.csv", first)
    cli(*count, *shards[:4], "--concepts", v1_concepts)
    # Other inputs and concepts than v1's: new versions of this output only with --force.
    failed = CliRunner().invoke(
        app,
        [*count, *shards[:4], "--input", str(bad), "--concepts", v1_concepts]
        + ["--max-failed-shards", "0", "--force"],
    )
    assert failed.exit_code == 1, failed.output
    cli(*count, *shards, "--concepts", _concept_csv(root / "v2.csv", second), "--force")

    (root / "photos").mkdir()
    setup = tagged_setup(root / "photos", laion_captions, samples=20)
    photos = str(root / "photos-out")
    cli(*setup["common"], "--out", photos, "--dataset-name", "photos")
    cli("rethreshold", photos, "--threshold", "0.6")

    def run_ids(out: str) -> list[str]:
        return run_query(out, "SELECT run_id FROM runs ORDER BY finished_at").column(0).to_pylist()

    return Outputs(laion, run_ids(laion), photos, run_ids(photos), second)


_BUILT: list[Outputs] = []


def shared_outputs(tmp_path_factory, laion_captions: list[str]) -> Outputs:
    """The outputs, built on first use and shared with test_query_examples.py (a fixture
    imported into another module would be a second fixture, built a second time)."""
    if not _BUILT:
        _BUILT.append(_build(tmp_path_factory.mktemp("history"), laion_captions))
    return _BUILT[0]


@pytest.fixture(scope="session")
def outputs(ray_local, tmp_path_factory, laion_captions) -> Outputs:
    return shared_outputs(tmp_path_factory, laion_captions)


def at(out: str, run_id: str, sql: str) -> list[dict[str, Any]]:
    return run_query(out, sql, run_id).to_pylist()


def image_hits(out: str, run_id: str, threshold: float) -> tuple[int, int]:
    """(image, integrated) hits of a version, from the scores stored in its hits."""
    image = integrated = 0
    for h in at(out, run_id, "SELECT * FROM hits"):
        text = set(h["text_concept_ids"] or [])
        for concept_id, score in zip(
            h["image_concept_ids"] or [], h["image_scores"] or [], strict=True
        ):
            image += score > threshold
            integrated += score > threshold and concept_id in text
    return image, integrated


def expected_changes(out: str, old: str, new: str, column: str) -> list[dict[str, Any]]:
    """The diff of two versions, worked out from each version's frequencies."""
    sql = f"SELECT concept_id, concept, {column} AS n FROM frequencies"
    before = {r["concept_id"]: r for r in at(out, old, sql)}
    after = {r["concept_id"]: r for r in at(out, new, sql)}
    rows = []
    for concept_id in sorted(before.keys() | after.keys()):
        a, b = before.get(concept_id), after.get(concept_id)
        change = (b["n"] if b else 0) - (a["n"] if a else 0)
        if a and b and not change:
            continue
        rows.append(
            {
                "concept_id": concept_id,
                "concept": (a or b)["concept"],
                "status": "changed" if a and b else ("removed" if a else "new"),
                "old": a["n"] if a else None,
                "new": b["n"] if b else None,
                "change": change,
                "relative_change": change / a["n"] if a and a["n"] else None,
            }
        )
    return sorted(rows, key=lambda r: (-abs(r["change"]), r["concept"]))


def test_history_lists_versions_oldest_first_with_their_totals(outputs):
    v1, failed, v2 = outputs.laion_runs
    rows = output_history(outputs.laion).to_pylist()
    assert [(r["version"], r["run_id"], r["status"]) for r in rows] == [
        (1, v1, "succeeded"),
        (None, failed, "failed"),
        (2, v2, "succeeded"),
    ]
    assert {(r["kind"], r["parent_run_id"], r["dataset"], r["tagger"]) for r in rows} == {
        ("count", None, "laion", None)
    }
    assert [(r["shards_total"], r["shards_ok"], r["shards_failed"]) for r in rows] == [
        (2, 2, 0),
        (3, 2, 1),
        (3, 3, 0),
    ]
    for row, shards in ((rows[0], 2), (rows[2], 3)):
        freq = at(
            outputs.laion,
            row["run_id"],
            "SELECT sum(text_count) AS hits, count(*) FILTER (text_count > 0) AS hit,"
            " (SELECT sum(samples_counted) FROM shards) AS samples FROM frequencies",
        )[0]
        assert row["samples_counted"] == freq["samples"] == shards * ROWS_PER_SHARD
        assert (row["text_hits"], row["concepts_with_hits"]) == (freq["hits"], freq["hit"])
        assert row["text_hits"] > 0
        assert row["image_hits"] is row["integrated_hits"] is row["misalignment_degree"] is None
    finished = [r["finished_at"] for r in rows]
    assert finished == sorted(finished)
    # The CLI prints the same rows; the table marks the failed run and leaves it unnumbered.
    assert csv_rows(cli("history", outputs.laion, "--csv")) == as_csv(rows)
    table = CliRunner().invoke(app, ["history", outputs.laion], env={"COLUMNS": "200"})
    lines = [line.split() for line in table.stdout.splitlines()]
    assert [words[:2] for words in lines if words[1:2] in ([v1], [v2])] == [["1", v1], ["2", v2]]
    # Unnumbered, in its table row and the list of inputs under the table.
    assert [words[0] for words in lines if failed in words] == [failed, failed]
    assert "failed" in lines[lines.index(next(w for w in lines if failed in w)) + 1]


def test_history_of_a_tagged_output_sums_image_hits_per_version(outputs):
    v1, v2 = outputs.photos_runs
    rows = output_history(outputs.photos).to_pylist()
    assert [(r["version"], r["run_id"], r["kind"], r["parent_run_id"]) for r in rows] == [
        (1, v1, "count", None),
        (2, v2, "rethreshold", v1),
    ]
    runs = {r["run_id"]: r for r in at(outputs.photos, v2, "SELECT * FROM runs")}
    for row, threshold in zip(rows, (0.7, 0.6), strict=True):
        assert (row["tagger"], row["image_threshold"]) == ("rampp", threshold)
        assert (row["image_hits"], row["integrated_hits"]) == image_hits(
            outputs.photos, row["run_id"], threshold
        )
        assert row["misalignment_degree"] == runs[row["run_id"]]["misalignment_degree"]
        assert row["samples_counted"] == 20
    assert rows[0]["text_hits"] == rows[1]["text_hits"] > 0
    assert rows[1]["image_hits"] > rows[0]["image_hits"] > 0


def test_versions_resolve_by_number_run_id_or_word(outputs):
    v1, failed, v2 = outputs.laion_runs
    for ref, run in (("1", v1), ("v2", v2), ("latest", v2), ("previous", v1), (v1, v1)):
        assert resolve_version(outputs.laion, ref).run_id == run
    for ref, message in (
        ("3", "no version 3; versions are 1..2"),
        ("0", "no version 0"),
        (failed, "failed and committed nothing"),
        ("nope", "is no version number, run id"),
    ):
        with pytest.raises(OutputError, match=message):
            resolve_version(outputs.laion, ref)


def test_diff_gives_the_changes_between_the_two_versions_frequencies(outputs):
    v1, _, v2 = outputs.laion_runs
    expected = expected_changes(outputs.laion, v1, v2, "text_count")
    result = diff_versions(outputs.laion)  # previous -> latest: the failed run is no version
    assert (result.old.run_id, result.new.run_id, result.column) == (v1, v2, "text_count")
    assert result.changes.to_pylist() == expected
    statuses = Counter(r["status"] for r in expected)
    assert (result.changed, result.added, result.removed) == (
        statuses["changed"],
        len(ADDED),
        1,
    )
    assert {r["concept"] for r in expected if r["status"] == "removed"} == {REMOVED}
    assert {r["concept"] for r in expected if r["status"] == "new"} == set(ADDED)
    assert statuses["changed"] > 10

    top = CliRunner().invoke(
        app, ["diff", outputs.laion, "--from", "1", "--to", v2, "--top", "5", "--csv"]
    )
    assert top.exit_code == 0, top.output
    assert csv_rows(top.stdout) == as_csv(expected[:5])
    assert f"v1 (run {v1}, laion, 400 samples) -> v2 (run {v2}, laion, 600 samples)" in " ".join(
        top.stderr.split()
    )
    # Backwards: every change flips its sign, new and removed swap.
    back = diff_versions(outputs.laion, "latest", "v1").changes.to_pylist()
    swap = {"changed": "changed", "new": "removed", "removed": "new"}
    assert [(r["concept"], r["change"], r["status"]) for r in back] == [
        (r["concept"], -r["change"], swap[r["status"]]) for r in expected
    ]
    table = cli("diff", outputs.laion, "--top", "3")
    assert f"{len(expected) - 6:,} concepts changed, {len(ADDED)} new, 1 removed" in table
    assert all(r["concept"] in table for r in expected[:3])


def test_diff_by_image_compares_tagged_versions_only(outputs):
    v1, v2 = outputs.photos_runs
    for by in ("image", "integrated"):
        expected = expected_changes(outputs.photos, v1, v2, f"{by}_count")
        assert expected and all(r["change"] > 0 for r in expected)  # a lower threshold
        got = cli("diff", outputs.photos, "--by", by, "--csv")
        assert csv_rows(got) == as_csv(expected)
    assert "tagged no images: --by image compares tagged versions only" in refused(
        "diff", outputs.laion, "--by", "image"
    )
    assert "failed and committed nothing" in refused(
        "diff", outputs.laion, "--from", outputs.laion_runs[1]
    )
    assert "choose one of text, image, integrated" in refused("diff", outputs.laion, "--by", "x")


def test_query_and_show_read_an_older_version(outputs):
    v1, _, v2 = outputs.laion_runs
    sql = "SELECT DISTINCT run_id, samples_scanned FROM frequencies"
    assert csv_rows(cli("query", outputs.laion, sql, "--version", "1", "--csv")) == [
        {"run_id": v1, "samples_scanned": str(2 * ROWS_PER_SHARD)}
    ]
    assert cli("query", outputs.laion, sql, "--version", "2", "--csv") == cli(
        "query", outputs.laion, sql, "--csv"
    )
    assert v2 in cli("query", outputs.laion, sql, "--csv")
    old = at(outputs.laion, v1, f"SELECT text_count FROM frequencies WHERE concept = '{REMOVED}'")
    shown = cli("show", outputs.laion, REMOVED, "--version", "1", "--examples", "1")
    assert f"text_count {old[0]['text_count']:,} of 400 samples" in shown and v1 in shown
    assert "is not in this output's concept set" in refused("show", outputs.laion, REMOVED)
    assert "pass one of them" in refused("query", outputs.laion, sql, "--version", "1", "--run", v1)
    assert "no version 5" in refused("query", outputs.laion, sql, "--version", "5")


def test_attach_joins_other_outputs_and_versions(outputs):
    v1 = outputs.laion_runs[0]
    sql = (
        "SELECT concept, f.text_count AS laion, o.text_count AS laion_v1,"
        " p.image_count AS photos_image FROM frequencies f"
        " JOIN photos.frequencies p USING (concept) LEFT JOIN old.frequencies o USING (concept)"
        " ORDER BY concept"
    )
    got = csv_rows(
        cli(
            "query",
            outputs.laion,
            sql,
            "--attach",
            f"photos={outputs.photos}@v1",
            "--attach",
            f"old={outputs.laion}@{v1}",
            "--csv",
        )
    )

    def counts(out: str, run: str | None, column: str) -> dict[str, int]:
        rows = run_query(out, f"SELECT concept, {column} AS n FROM frequencies", run).to_pylist()
        return {r["concept"]: r["n"] for r in rows}

    laion, laion_v1 = (
        counts(outputs.laion, None, "text_count"),
        counts(outputs.laion, v1, "text_count"),
    )
    photos = counts(outputs.photos, outputs.photos_runs[0], "image_count")
    assert got == as_csv(
        [
            {"concept": c, "laion": laion[c], "laion_v1": laion_v1.get(c), "photos_image": n}
            for c, n in sorted(photos.items())
        ]
    )
    assert len(got) == 10 and any(r["laion_v1"] == "" for r in got)  # ADDED concepts
    # The library takes the same mapping; the latest photos version is re-thresholded at 0.6.
    latest = run_query(
        outputs.laion,
        "SELECT DISTINCT image_threshold FROM p.frequencies",
        attach={"p": outputs.photos},
    )
    assert latest.to_pylist() == [{"image_threshold": 0.6}]
    for option, message in (
        (f"1x={outputs.photos}", "not a SQL identifier"),
        (f"main={outputs.photos}", "reserved by DuckDB"),
        ("photos", "expected NAME=DIR"),
        (f"photos={outputs.photos}@v9", "no version 9"),
    ):
        assert message in refused("query", outputs.laion, "SELECT 1", "--attach", option)
    twice = ("--attach", f"a={outputs.photos}", "--attach", f"A={outputs.photos}")
    assert "given twice" in refused("query", outputs.laion, "SELECT 1", *twice)


@pytest.fixture
def s3_copy(outputs) -> Iterator[str]:
    """The laion output copied to a moto S3 bucket (Delta tables hold relative paths only)."""
    import boto3

    with moto_server() as endpoint, aws_environment(endpoint):
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        root = Path(outputs.laion)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            client.upload_file(str(path), BUCKET, f"laion-out/{path.relative_to(root)}")
        yield f"s3://{BUCKET}/laion-out"


def test_history_and_versioned_queries_work_on_s3(outputs, s3_copy):
    assert cli("history", s3_copy, "--csv") == cli("history", outputs.laion, "--csv")
    sql = "SELECT concept, text_count FROM frequencies ORDER BY concept_id"
    assert cli("query", s3_copy, sql, "--version", "1", "--csv") == cli(
        "query", outputs.laion, sql, "--version", "1", "--csv"
    )
    assert cli("diff", s3_copy, "--csv") == cli("diff", outputs.laion, "--csv")
    attached = "SELECT count(*) AS n FROM frequencies JOIN old.frequencies USING (concept_id)"
    got = cli("query", s3_copy, attached, "--attach", f"old={s3_copy}@1", "--csv")
    assert csv_rows(got) == [{"n": str(len(outputs.concepts_v2) - len(ADDED))}]
