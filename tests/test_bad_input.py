"""Dirty input through the whole job: every bad record or shard is counted or refused clearly."""

from __future__ import annotations

import json

import pytest
from shardkit import truncate_file, write_caption_parquet, write_webdataset_shard
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.query import run_query

pytestmark = pytest.mark.usefixtures("ray_local")

CONCEPTS = "dog\ncat\nshirt\n"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def concepts(tmp_path):
    path = tmp_path / "concepts.txt"
    path.write_text(CONCEPTS)
    return str(path)


def test_dirty_webdataset_shards(tmp_path, concepts):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_webdataset_shard(
        shards / "00000.tar",
        [
            {"key": "000000000", "txt": "a dog on a sofa", "jpg": b"x"},
            {"key": "000000001", "txt": "", "jpg": b"x"},
            {"key": "000000002", "txt": "a cat " + "word " * 20_000, "jpg": b"x"},  # 100 kB
            {"key": "000000003", "txt": b"a dog \xff\xfe caf\xe9", "jpg": b"x"},
            {"key": "000000004", "txt": "<b>Dogs</b> &amp; <i>cats</i> playing", "jpg": b"x"},
            {
                "key": "000000005",
                "json": {"caption": "two cats", "url": "http://x/5.jpg"},
                "jpg": b"x",
            },
            {"key": "000000006", "jpg": b"x"},
        ],
    )
    # The same key again, later in the tar: counted once.
    write_webdataset_shard(
        shards / "00001.tar",
        [
            {"key": "000010000", "txt": "a dog", "jpg": b"x"},
            {"key": "000010001", "txt": "a cat", "jpg": b"x"},
        ]
        + [{"key": "000010000", "txt": "a dog again", "jpg": b"x"}],
    )
    write_webdataset_shard(
        shards / "00002.tar", [{"key": f"00002{i:04d}", "jpg": b"x"} for i in range(3)]
    )
    write_webdataset_shard(
        shards / "00003.tar",
        [{"key": f"00003{i:04d}", "txt": "a dog " * 50, "jpg": b"x" * 4096} for i in range(20)],
    )
    truncate_file(shards / "00003.tar", 30_000)

    out = tmp_path / "out"
    result = invoke("count", "--input", str(shards), "--out", str(out), "--concepts", concepts)
    assert result.exit_code == 0, result.output
    assert "failed shard" in result.output and "truncated_tar" in result.output

    rows = {
        r["shard"].rsplit("/", 1)[-1]: r
        for r in run_query(
            str(out),
            "SELECT shard, status, error_reason, samples_read, samples_counted, samples_skipped,"
            " map_entries(skipped) AS skipped, html_captions, text_hits FROM shards",
        ).to_pylist()
    }

    def skipped(name):
        return {e["key"]: e["value"] for e in rows[name]["skipped"]}

    first = rows["00000.tar"]
    assert (first["status"], first["samples_read"], first["samples_counted"]) == ("ok", 7, 3)
    assert skipped("00000.tar") == {
        "empty_caption": 1,
        "caption_too_long": 1,
        "invalid_utf8": 1,
        "missing_caption": 1,
    }
    assert first["html_captions"] == 1
    second = rows["00001.tar"]
    assert (second["samples_read"], second["samples_counted"]) == (3, 2)
    assert skipped("00001.tar") == {"duplicate_key": 1}
    assert (rows["00002.tar"]["status"], rows["00002.tar"]["samples_counted"]) == ("ok", 0)
    assert skipped("00002.tar") == {"missing_caption": 3}
    failed = rows["00003.tar"]
    assert (failed["status"], failed["error_reason"], failed["text_hits"]) == (
        "failed",
        "truncated_tar",
        0,
    )

    counts = {
        r["concept"]: r["text_count"]
        for r in run_query(str(out), "SELECT concept, text_count FROM frequencies").to_pylist()
    }
    # dog: "a dog on a sofa", "<b>Dogs</b>...", shard 1 "a dog"; cat: html caption, "two cats",
    # shard 1 "a cat". The truncated shard's 20 dogs are not counted.
    assert counts == {"dog": 3, "cat": 3, "shirt": 0}
    run = run_query(str(out), "SELECT * FROM runs").to_pylist()[0]
    assert (run["shards_ok"], run["shards_failed"], run["samples_counted"]) == (3, 1, 5)
    assert run["samples_read"] == run["samples_counted"] + run["samples_skipped"] == 13
    url = run_query(str(out), "SELECT url, metadata FROM hits WHERE key = '000000005'").to_pylist()
    assert (
        url[0]["url"] == "http://x/5.jpg"
        and json.loads(url[0]["metadata"])["caption"] == "two cats"
    )

    # A re-run on the same input gives identical tables (but for the run id) and a second run;
    # the first run stays readable.
    def tables(run_id=None):
        return [
            run_query(str(out), sql, run_id).to_pylist()
            for sql in (
                "SELECT * EXCLUDE (run_id) FROM frequencies ORDER BY concept_id",
                "SELECT * EXCLUDE (run_id) FROM shards ORDER BY shard",
                "SELECT * EXCLUDE (run_id) FROM hits ORDER BY shard, key",
                "SELECT * EXCLUDE (run_id) FROM shard_counts ORDER BY shard, concept_id",
            )
        ]

    before = tables()
    assert (
        invoke("count", "--input", str(shards), "--out", str(out), "--concepts", concepts).exit_code
        == 0
    )
    runs = run_query(str(out), "SELECT run_id FROM runs ORDER BY started_at").to_pylist()
    assert len(runs) == 2 and runs[0]["run_id"] == run["run_id"]
    assert tables() == before
    assert tables(run["run_id"]) == before


def test_dirty_parquet_shard(tmp_path, concepts):
    shards = tmp_path / "pq"
    shards.mkdir()
    write_caption_parquet(
        shards / "a.parquet",
        ["a dog", None, "   ", "cats " * 30_000, "<p>a shirt</p>"],
        urls=["u0", "u1", "u2", "u3", "u4"],
    )
    out = tmp_path / "out"
    result = invoke("count", "--input", str(shards), "--out", str(out), "--concepts", concepts)
    assert result.exit_code == 0, result.output
    row = run_query(
        str(out), "SELECT samples_read, samples_counted, map_entries(skipped) AS s FROM shards"
    ).to_pylist()[0]
    assert (row["samples_read"], row["samples_counted"]) == (5, 2)
    assert {e["key"]: e["value"] for e in row["s"]} == {
        "missing_caption": 1,
        "empty_caption": 1,
        "caption_too_long": 1,
    }
    counts = run_query(str(out), "SELECT concept, text_count FROM frequencies ORDER BY concept")
    assert counts.to_pylist() == [
        {"concept": "cat", "text_count": 0},
        {"concept": "dog", "text_count": 1},
        {"concept": "shirt", "text_count": 1},
    ]


def test_refusals_are_clear_and_start_nothing(tmp_path, concepts):
    missing = invoke(
        "count",
        "--input",
        str(tmp_path / "nope"),
        "--format",
        "parquet",
        "--out",
        str(tmp_path / "o"),
    )
    assert missing.exit_code == 2
    assert "nope" in missing.output and "Traceback" not in missing.output

    write_caption_parquet(tmp_path / "x.parquet", ["a dog"])
    unknown = invoke(
        "count",
        "--input",
        str(tmp_path / "x.parquet"),
        "--caption-column",
        "caption",
        "--out",
        str(tmp_path / "o"),
        "--concepts",
        concepts,
    )
    assert unknown.exit_code == 2
    assert "caption" in unknown.output and "TEXT" in unknown.output

    no_model = invoke(
        "count",
        "--input",
        str(tmp_path / "x.parquet"),
        "--spacy-model",
        "en_core_web_xx_nope",
        "--out",
        str(tmp_path / "o"),
        "--concepts",
        concepts,
    )
    assert no_model.exit_code == 2 and "en_core_web_xx_nope" in no_model.output
    assert not (tmp_path / "o").exists()


def test_format_is_inferred_and_img2dataset_metadata_parquet_is_ignored(tmp_path, concepts):
    shards = tmp_path / "img2dataset"
    shards.mkdir()
    write_webdataset_shard(
        shards / "00000.tar", [{"key": "000000000", "txt": "a dog", "jpg": b"x"}]
    )
    write_caption_parquet(shards / "00000.parquet", ["a dog"])  # img2dataset's metadata file
    out = tmp_path / "out"
    assert (
        invoke("count", "--input", str(shards), "--out", str(out), "--concepts", concepts).exit_code
        == 0
    )
    config = run_query(str(out), "SELECT config FROM runs").to_pylist()[0]["config"]
    assert json.loads(config)["source"]["format"] == "webdataset"

    write_caption_parquet(shards / "extra.parquet", ["a cat"])
    mixed = invoke("count", "--input", str(shards), "--out", str(out), "--concepts", concepts)
    assert mixed.exit_code == 2
    assert "found 1 .tar and 2 .parquet shards; pass --format webdataset|parquet" in mixed.output


def test_max_failed_shards_fails_the_run_and_keeps_the_previous_one_current(tmp_path, concepts):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_webdataset_shard(shards / "00000.tar", [{"key": "0", "txt": "a dog", "jpg": b"x"}])
    out = str(tmp_path / "out")
    args = ("count", "--input", str(shards), "--format", "webdataset", "--concepts", concepts)
    assert invoke(*args, "--out", out, "--max-failed-shards", "0").exit_code == 0
    first = run_query(out, "SELECT run_id FROM runs").column("run_id").to_pylist()

    # A second, larger input in which one of two shards is cut short.
    write_webdataset_shard(
        shards / "00001.tar",
        [{"key": f"1{i:03d}", "txt": "a cat " * 50, "jpg": b"x" * 4096} for i in range(20)],
    )
    truncate_file(shards / "00001.tar", 30_000)
    result = invoke(*args, "--out", out, "--max-failed-shards", "0")
    assert result.exit_code == 1
    assert "truncated_tar" in result.output and "more than --max-failed-shards 0" in result.output
    runs = run_query(out, "SELECT run_id, status FROM runs ORDER BY started_at").to_pylist()
    assert [r["status"] for r in runs] == ["succeeded", "failed"]
    # Nothing of the failed run is visible: the tables are still the first run's.
    assert run_query(out, "SELECT DISTINCT run_id FROM frequencies").column(0).to_pylist() == first
    assert run_query(out, "SELECT count(*) FROM shards").column(0).to_pylist() == [1]

    # One failed shard allowed: the run succeeds and reports it.
    result = invoke(*args, "--out", out, "--max-failed-shards", "1")
    assert result.exit_code == 0 and "failed shard" in result.output
    assert run_query(out, "SELECT count(*) FROM shards").column(0).to_pylist() == [2]
