"""Duplicate sample keys: a key repeated in a shard counts once (the first), and shards holding
another shard's keys (a copy, a re-upload) are reported, or fail the run on request."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from shardkit import truncate_file, write_caption_parquet, write_webdataset_shard
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.config import SourceConfig
from freqscan.counting.duplicates import (
    SKETCH_SIZE,
    DuplicateShard,
    KeySummary,
    describe,
    find_duplicate_shards,
)
from freqscan.counting.shard import ShardOutcome, read_shard_rows
from freqscan.query import run_query
from freqscan.records import Sample, ShardInfo
from freqscan.tables.store import OutputStore
from freqscan.text.keys import CaptionKeys

CONCEPTS = "dog\ncat\nshirt\n"


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def summary(keys) -> KeySummary:
    found = KeySummary.of(keys)
    assert found is not None
    return found


# --- key summaries and the comparison (no Ray) -----------------------------------------------


def test_a_key_summary_depends_on_the_set_of_keys_only():
    keys = [f"00000{i:04d}" for i in range(1000)]
    shuffled = random.Random(0).sample(keys, len(keys))
    assert summary(keys) == summary(shuffled)
    assert len(summary(keys).sketch) == SKETCH_SIZE
    assert list(summary(keys).sketch) == sorted(summary(keys).sketch)
    assert summary(keys[:-1]).digest != summary(keys).digest
    assert len(summary(["a", "b"]).sketch) == 2  # fewer keys than the sketch holds: all of them
    assert KeySummary.of([]) is None  # no counted key: nothing to compare
    assert KeySummary.from_dict(summary(keys).to_dict()) == summary(keys)
    # A tar member name with undecodable bytes reaches the reader as a lone surrogate.
    assert summary(["caf\udce9"]) != summary(["caf\u00e9"])


def test_shards_holding_keys_of_an_earlier_shard_name_it():
    # Fewer keys than a sketch holds: every shared key is in both sketches.
    def keys(shard: int, n: int = 20) -> list[str]:
        return [f"{shard:05d}{i:04d}" for i in range(n)]

    shards = [
        ("a.tar", summary(keys(0))),
        ("b.tar", summary(keys(1))),
        ("empty.tar", None),  # failed, or no key counted: never compared
        ("copy-of-a.tar", summary(reversed(keys(0)))),
        ("part-of-b.tar", summary(keys(1)[:5] + keys(2, 10))),
        ("copy-of-b.tar", summary(keys(1))),
        ("c.tar", summary(keys(3))),
    ]
    found = find_duplicate_shards(shards)
    assert found == [
        DuplicateShard("copy-of-a.tar", "a.tar", same_keys=True),
        DuplicateShard("part-of-b.tar", "b.tar", same_keys=False),
        # Its keys are in b.tar and part-of-b.tar; the shard with the same keys is named.
        DuplicateShard("copy-of-b.tar", "b.tar", same_keys=True),
    ]
    assert find_duplicate_shards([shards[0], shards[1], shards[6]]) == []
    assert describe(found) == (
        "copy-of-a.tar has the same keys as a.tar; part-of-b.tar shares keys with b.tar; "
        "copy-of-b.tar has the same keys as b.tar"
    )
    many = [DuplicateShard(f"{i}.tar", "a.tar", True) for i in range(8)]
    assert describe(many).endswith(
        "4.tar has the same keys as a.tar; and 3 more (runs.duplicate_shards)"
    )


def search(samples: list[Sample]) -> list[tuple[list[int], CaptionKeys]]:
    return [([1] if "dog" in s.caption else [], CaptionKeys(frozenset())) for s in samples]


def outcome(path: Path, source: SourceConfig) -> ShardOutcome:
    info = ShardInfo(str(path), path.stat().st_size)
    rows = list(read_shard_rows(info, source, search))
    return ShardOutcome.from_json(rows[-1]["outcome"][0].as_py())


def test_a_shard_outcome_summarises_its_counted_keys(tmp_path):
    write_webdataset_shard(
        tmp_path / "s.tar",
        [
            {"key": "k0", "txt": "a dog", "jpg": b"x"},
            {"key": "k0", "txt": "a cat", "jpg": b"x"},  # again, right away: skipped
            {"key": "k1", "txt": "", "jpg": b"x"},  # not counted: not summarised
            {"key": "k2", "txt": "a shirt", "jpg": b"x"},
        ],
    )
    got = outcome(tmp_path / "s.tar", SourceConfig(input=("x",), format="webdataset"))
    assert (got.stats.samples_read, got.stats.samples_counted) == (4, 2)
    assert got.stats.skipped == {"duplicate_key": 1, "empty_caption": 1}
    assert got.key_summary == summary(["k0", "k2"])
    assert ShardOutcome.from_json(got.to_json()) == got

    write_caption_parquet(
        tmp_path / "p.parquet", ["a dog", "a cat"], extra_columns={"id": ["x", "y"]}
    )
    # Row indices repeat in every parquet shard: they are no evidence of duplicates.
    rows = SourceConfig(input=("x",), format="parquet")
    assert outcome(tmp_path / "p.parquet", rows).key_summary is None
    keyed = SourceConfig(input=("x",), format="parquet", key_column="id")
    assert outcome(tmp_path / "p.parquet", keyed).key_summary == summary(["x", "y"])
    # An outcome written before summaries were kept has none.
    old = json.loads(got.to_json())
    del old["key_summary"]
    assert ShardOutcome.from_json(json.dumps(old)).key_summary is None


# --- through the job ------------------------------------------------------------------------


@pytest.fixture
def concepts(tmp_path):
    path = tmp_path / "concepts.txt"
    path.write_text(CONCEPTS)
    return str(path)


def write_shard(path: Path, shard: int, captions: list[str]) -> None:
    write_webdataset_shard(
        path,
        [
            {"key": f"{shard:05d}{i:04d}", "txt": caption, "jpg": b"x"}
            for i, caption in enumerate(captions)
        ],
    )


def count(shards: Path, out: Path, concepts: str, *extra: str, code: int = 0) -> str:
    return invoke(
        "count",
        "--input",
        str(shards),
        "--out",
        str(out),
        "--concepts",
        concepts,
        *extra,
        code=code,
    )


def text_counts(out: Path) -> dict[str, int]:
    rows = run_query(str(out), "SELECT concept, text_count FROM frequencies").to_pylist()
    return {r["concept"]: r["text_count"] for r in rows}


def runs(out: Path) -> list[dict]:
    return run_query(
        str(out),
        "SELECT run_id, status, kind, shards_reused, duplicate_shards, table_versions "
        "FROM runs ORDER BY finished_at",
    ).to_pylist()


@pytest.mark.usefixtures("ray_local")
def test_a_sample_repeated_in_a_shard_counts_once_the_first_one(tmp_path, concepts):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_webdataset_shard(
        shards / "00000.tar",
        [
            {"key": "000000000", "txt": "a dog", "jpg": b"x"},
            {"key": "000000000", "txt": "a cat", "jpg": b"x"},  # right after: skipped
            {"key": "000000001", "txt": "a shirt", "jpg": b"x"},
            {"key": "000000002", "txt": "a cat", "jpg": b"x"},
            {"key": "000000001", "txt": "a dog", "jpg": b"x"},  # later: skipped
        ],
    )
    # A shard cut short fails: the samples read before the cut count nowhere, not even in the bar.
    write_shard(shards / "00001.tar", 1, ["a dog " * 50] * 20)
    truncate_file(shards / "00001.tar", 30_000)
    out = tmp_path / "out"
    printed = count(shards, out, concepts)
    assert "counted 3 of 5 samples from 1/2 shards" in printed.replace("\n", " ")
    assert "skipped samples: duplicate_key: 2" in printed
    assert " 2/2 shards (1 failed) 5 samples · " in printed
    assert "duplicate shards" not in printed
    [row] = run_query(
        str(out),
        "SELECT samples_read, samples_counted, map_entries(skipped) AS s FROM shards "
        "WHERE status = 'ok'",
    ).to_pylist()
    assert (row["samples_read"], row["samples_counted"]) == (5, 3)
    assert row["s"] == [{"key": "duplicate_key", "value": 2}]
    [cut] = run_query(
        str(out), "SELECT error_reason, samples_read FROM shards WHERE status = 'failed'"
    ).to_pylist()
    assert cut == {"error_reason": "truncated_tar", "samples_read": 14}  # not in the bar's 5
    assert text_counts(out) == {"dog": 1, "cat": 1, "shirt": 1}
    assert json.loads(runs(out)[-1]["duplicate_shards"]) == []


@pytest.mark.usefixtures("ray_local")
def test_a_copied_shard_is_reported_and_counted(tmp_path, concepts):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "00000.tar", 0, ["a dog", "a cat"])
    write_shard(shards / "00002.tar", 2, ["a shirt"])
    shutil.copy(shards / "00000.tar", shards / "00001.tar")  # uploaded again under another name
    out = tmp_path / "out"
    printed = count(shards, out, concepts)
    assert (
        f"duplicate shards (their samples count twice): {shards / '00001.tar'} has the same keys "
        f"as {shards / '00000.tar'}"
    ) in printed.replace("\n", "")
    assert "counted 5 of 5 samples from 3/3 shards" in printed
    assert text_counts(out) == {"dog": 2, "cat": 2, "shirt": 1}
    [run] = runs(out)
    assert run["status"] == "succeeded"
    assert json.loads(run["duplicate_shards"]) == [
        {
            "shard": str(shards / "00001.tar"),
            "duplicates_of": str(shards / "00000.tar"),
            "same_keys": True,
        }
    ]
    summaries = run_query(str(out), "SELECT shard, key_digest FROM shards ORDER BY shard")
    digests = summaries.column("key_digest").to_pylist()
    assert digests[0] == digests[1] != digests[2]


@pytest.mark.usefixtures("ray_local")
def test_on_duplicate_shards_fail_commits_nothing(tmp_path, concepts):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "00000.tar", 0, ["a dog", "a cat"])
    write_shard(shards / "00001.tar", 1, ["a shirt"])
    out = tmp_path / "out"
    # Distinct keys: nothing to report, the run commits.
    printed = count(shards, out, concepts, "--on-duplicate-shards", "fail")
    assert "duplicate shards" not in printed
    before = text_counts(out)
    assert before == {"dog": 1, "cat": 1, "shirt": 1}

    # Half of 00000's samples again, in a shard of its own: shared keys, not the same keys.
    write_webdataset_shard(
        shards / "00002.tar",
        [
            {"key": "000000000", "txt": "a dog", "jpg": b"x"},
            {"key": "000020000", "txt": "a cat", "jpg": b"x"},
        ],
    )
    failed = count(shards, out, concepts, "--on-duplicate-shards", "fail", code=1)
    assert (
        f"1 shard(s) hold sample keys of another shard (--on-duplicate-shards fail): "
        f"{shards / '00002.tar'} shares keys with {shards / '00000.tar'}; nothing was committed"
    ) in failed.replace("\n", "")
    assert text_counts(out) == before
    first, second = runs(out)
    assert second["status"] == "failed" and json.loads(second["table_versions"]) == {}
    assert json.loads(second["duplicate_shards"]) == [
        {
            "shard": str(shards / "00002.tar"),
            "duplicates_of": str(shards / "00000.tar"),
            "same_keys": False,
        }
    ]
    # Whether a run fails for duplicates decides no count: the default (warn) commits them.
    count(shards, out, concepts)
    assert text_counts(out) == {"dog": 2, "cat": 2, "shirt": 1}


@pytest.mark.usefixtures("ray_local")
def test_a_recount_compares_added_shards_with_reused_ones(tmp_path, concepts):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "00000.tar", 0, ["a dog", "a cat"])
    write_shard(shards / "00001.tar", 1, ["a shirt"])
    out = tmp_path / "out"
    count(shards, out, concepts, "--on-duplicate-shards", "fail")  # recorded, kept by recount
    shutil.copy(shards / "00001.tar", shards / "00002.tar")

    failed = invoke("recount", str(out), code=1)
    assert f"{shards / '00002.tar'} has the same keys as {shards / '00001.tar'}" in failed.replace(
        "\n", ""
    )
    first, recount = runs(out)
    assert (recount["kind"], recount["status"], recount["shards_reused"]) == (
        "recount",
        "failed",
        2,
    )
    assert json.loads(recount["duplicate_shards"]) == [
        {
            "shard": str(shards / "00002.tar"),
            "duplicates_of": str(shards / "00001.tar"),
            "same_keys": True,
        }
    ]
    assert text_counts(out) == {"dog": 1, "cat": 1, "shirt": 1}


@pytest.mark.usefixtures("ray_local")
def test_an_output_of_an_older_freqscan_can_be_recounted(tmp_path, concepts):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "00000.tar", 0, ["a dog", "a cat"])
    out = tmp_path / "out"
    count(shards, out, concepts)
    # What an older freqscan wrote: no key summaries in `shards`, no `runs.duplicate_shards`.
    store = OutputStore(str(out))
    old_shards = store.snapshot()["shards"].to_table().drop_columns(["key_digest", "key_sketch"])
    write_deltalake(
        store.table_uri("shards"), old_shards, mode="overwrite", schema_mode="overwrite"
    )
    old_runs = store.runs().drop_columns(["duplicate_shards"])
    [run] = old_runs.to_pylist()
    versions = json.loads(run["table_versions"])
    versions["shards"] += 1  # the version just written
    run["table_versions"] = json.dumps(versions)
    old_runs = pa.Table.from_pylist([run], schema=old_runs.schema)
    write_deltalake(store.table_uri("runs"), old_runs, mode="overwrite", schema_mode="overwrite")

    shutil.copy(shards / "00000.tar", shards / "00001.tar")
    invoke("recount", str(out))
    old, recount = runs(out)
    assert old["duplicate_shards"] is None
    # The reused shard has no summary, so its copy goes unnoticed until a full recount.
    assert (recount["shards_reused"], json.loads(recount["duplicate_shards"])) == (1, [])
    rows = run_query(str(out), "SELECT shard, key_digest FROM shards ORDER BY shard").to_pylist()
    assert [r["key_digest"] is None for r in rows] == [True, False]
