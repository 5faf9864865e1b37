"""`freqscan add-concepts`: concepts counted from the stored caption keys, with no shard read,
equal a fresh count with both concept files; refusals are clean; caption keys survive retries."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_DIR
from tablekit import comparable_tables
from typer.testing import CliRunner

import freqscan.counting.shard as shard_module
from freqscan.cli import app
from freqscan.concepts import load_concepts
from freqscan.config import SourceConfig, TextConfig
from freqscan.counting.shard import ShardOutcome, read_shard_rows
from freqscan.query import run_query
from freqscan.records import READ_STORAGE_ERROR, Sample, ShardInfo, ShardReadError
from freqscan.recount import previous_results
from freqscan.tables.progress import ShardResult
from freqscan.tables.store import DataFile, OutputStore
from freqscan.text.keys import CaptionKeys
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.pipeline import load_pipeline
from freqscan.text.searcher import TextSearcher
from freqscan.text.stored import KEYS_MISSING, StoredKeysSearch

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.timeout(600)]

A = ["dog", "cat", "car", "shirt", "woman", "house", "flower", "table"]
# New ones (multi-word, hyphenated, proper noun, plural-only) and one already counted: "dog".
B = ["golden retriever", "dog", "t-shirt", "wedding dress", "Paris", "glasses", "sunset", "beach"]
# What every compared table must equal: all but `hits` (no sample of a new concept is in it).
COMPARED = ("frequencies", "shard_counts", "shards")


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def runs(out: Path) -> list[dict]:
    return run_query(str(out), "SELECT * FROM runs ORDER BY finished_at").to_pylist()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("concepts")
    paths = {"a": root / "a.txt", "b": root / "b.txt", "ab": root / "ab.txt"}
    for name, concepts in (("a", A), ("b", B), ("ab", A + [c for c in B if c not in A])):
        paths[name].write_text("\n".join(concepts) + "\n")
    return paths


def count(out: Path, concepts: Path, method: str) -> None:
    invoke(
        "count", "--input", str(SAMPLE_DIR), "--out", str(out), "--concepts", str(concepts),
        "--method", method, "--dataset-name", "laion",
    )  # fmt: skip


@pytest.fixture(scope="module", params=["paper", "normalized"])
def added(request, tmp_path_factory, files) -> Iterator[tuple[Path, Path, str]]:
    """(count with A then add-concepts B, fresh count with A and B, add-concepts' output)."""
    root = tmp_path_factory.mktemp(f"add-{request.param}")
    out, fresh = root / "out", root / "fresh"
    count(out, files["a"], request.param)
    printed = invoke("add-concepts", str(out), str(files["b"]))
    count(fresh, files["ab"], request.param)
    yield out, fresh, printed


def test_added_concepts_equal_a_fresh_count_of_both_files(added):
    out, fresh, printed = added
    got, want = comparable_tables(out), comparable_tables(fresh)
    for name in COMPARED:
        assert got[name] == want[name], name
    new = {r["concept"]: r for r in got["frequencies"] if r["concept"] not in A}
    assert set(new) == set(B) - {"dog"} and sum(r["text_count"] > 0 for r in new.values()) >= 5
    assert "skipped: dog" in printed and "no shard read" in printed

    parent, run = runs(out)
    reference = runs(fresh)[-1]
    assert (run["kind"], run["parent_run_id"], run["shards_reused"]) == (
        "add-concepts",
        parent["run_id"],
        None,
    )
    for column in ("concepts", "concept_set_hash", "text_hits", "concepts_with_hits"):
        assert run[column] == reference[column], column
    # The enlarged set is recorded as a file a recount loads back identically...
    assert load_concepts(run["concept_set"]).content_hash == run["concept_set_hash"]
    assert json.loads(run["config"])["concepts"] == run["concept_set"]
    # ...and a recount sees the run's own configuration: nothing to do, no difference listed.
    plan = invoke("recount", str(out), "--dry-run")
    assert "unchanged 4" in plan and "configuration:" not in plan


def test_the_count_keeps_the_caption_keys_of_every_counted_sample(added):
    out, _, _ = added
    snapshot = OutputStore(str(out)).snapshot()
    keys = snapshot["caption_keys"].to_table()
    shards = snapshot["shards"].to_table().to_pylist()
    assert keys.num_rows == sum(s["samples_counted"] for s in shards) == 10_000
    assert len(list(snapshot["caption_keys"].get_fragments())) == len(shards) == 4


def test_adding_the_same_concepts_again_commits_nothing(added, files):
    out, _, _ = added
    before = runs(out)
    printed = invoke("add-concepts", str(out), str(files["b"]))
    assert "nothing new" in printed and "nothing committed" in printed
    assert runs(out) == before


def test_resumed_runs_and_recounts_keep_the_caption_keys_files(added):
    out, _, _ = added
    store = OutputStore(str(out))
    run = store.current_run()
    rows = store.snapshot()["shards"].to_table().to_pylist()
    shards = [ShardInfo(r["shard"], r["size"], r["mtime"], r["etag"]) for r in rows]
    taken = previous_results(store, run, shards, grid=())  # what a recount takes over
    committed = store.data_files("caption_keys", json.loads(run["table_versions"])["caption_keys"])
    assert sorted(r.caption_keys.path for r in taken.values()) == sorted(f.path for f in committed)
    for result in taken.values():  # a resumed run reads them back from its markers
        again = ShardResult.from_json(result.to_json())
        assert again.caption_keys == result.caption_keys
        outcome = dataclasses.replace(result.outcome, caption_keys=result.caption_keys)
        assert ShardOutcome.from_json(outcome.to_json()) == outcome


def _copy_with_last_run(out: Path, tmp_path: Path, change) -> Path:
    """A copy of the output whose current run's row is changed by ``change``."""
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    store = OutputStore(str(copy))
    rows = store.runs().to_pylist()
    change(max(rows, key=lambda r: r["finished_at"]))
    store.replace("runs", pa.Table.from_pylist(rows, schema=store.runs().schema))
    return copy


def test_refused_when_the_installed_spacy_pipeline_differs(added, tmp_path):
    def older_pipeline(run):
        versions = json.loads(run["versions"])
        versions["spacy_pipeline_version"] = "0.0.1"
        run["versions"] = json.dumps(versions)

    copy = _copy_with_last_run(added[0], tmp_path, older_pipeline)
    before = runs(copy)
    more = tmp_path / "more.txt"
    more.write_text("lighthouse\n")
    refused = invoke("add-concepts", str(copy), str(more), code=2)
    assert "another spaCy pipeline" in refused and "'0.0.1'" in refused
    assert runs(copy) == before


def test_refused_when_the_run_kept_no_caption_keys(added, tmp_path):
    def older_output(run):
        versions = json.loads(run["table_versions"])
        del versions["caption_keys"]
        run["table_versions"] = json.dumps(versions)

    copy = _copy_with_last_run(added[0], tmp_path, older_output)
    more = tmp_path / "more.txt"
    more.write_text("lighthouse\n")
    refused = invoke("add-concepts", str(copy), str(more), code=2)
    assert "caption keys for 0 of the 10,000 samples" in refused and "--full" in refused


def test_caption_keys_of_a_shard_read_in_two_attempts_are_one_undisturbed_reads(monkeypatch):
    """The first read fails after 3,000 samples (past a chunk): its keys must all be dropped."""
    samples = [Sample(f"{i:05d}", f"caption {i % 7} of {i}") for i in range(5000)]
    samples[10] = Sample("00010", None, skip="empty_caption")  # not counted: no keys
    fail_at = [3000]  # the next read fails at this sample

    def read_shard(shard, source, images):
        stop = fail_at.pop() if fail_at else None
        for i, sample in enumerate(samples):
            if i == stop:
                raise ShardReadError(READ_STORAGE_ERROR, "connection dropped")
            yield sample

    def search(samples):
        words = [s.caption.split() for s in samples]
        return [([], CaptionKeys(frozenset(w[:2]), frozenset(w))) for w in words]

    def read(**kwargs) -> tuple[pa.Table, ShardOutcome]:
        written = []

        def write_keys(table: pa.Table) -> DataFile:
            written.append(table)
            return DataFile("part.parquet", 1, 0, table.num_rows)

        *_, last = read_shard_rows(
            ShardInfo("s.parquet", 1), source, search, write_keys=write_keys, **kwargs
        )
        return written[0], ShardOutcome.from_json(last.column("outcome")[0].as_py())

    monkeypatch.setattr(shard_module, "read_shard", read_shard)
    monkeypatch.setattr(shard_module, "changed_since_listing", lambda shard: None)
    source = SourceConfig(input=("s.parquet",), format="parquet")
    retried, outcome = read(retries=1, backoff_s=0, sleep=lambda s: None)
    assert outcome.read_attempts == 2 and outcome.caption_keys.num_rows == 4999
    clean, _ = read()  # undisturbed
    assert retried.equals(clean) and retried.num_rows == 4999
    assert retried.column("words")[0].as_py() == ["0", "caption", "of"]


def test_a_cached_caption_has_the_keys_of_a_fresh_parse(files):
    concepts = load_concepts(str(files["a"]))
    matcher = ConceptMatcher.build(concepts, load_pipeline(None), "normalized")
    captions = ["Two Golden Retrievers on the beach", "a red t-shirt"]
    captions.append(captions[0])
    cached = TextSearcher(TextConfig(), matcher)
    cached.search_with_keys(captions[:1])
    parsed = TextSearcher(TextConfig(caption_cache_size=0), matcher).search_with_keys(captions)
    assert cached.search_with_keys(captions) == parsed and cached.cache_hits == 2
    assert "retriever" in parsed[0][1].nouns and "golden" in parsed[0][1].words


def test_a_failed_shard_writes_no_caption_keys(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    table = pq.read_table(next(SAMPLE_DIR.glob("*.parquet"))).slice(0, 10)
    pq.write_table(table, tmp_path / "good.parquet")
    written = []

    def search(samples):
        return [([], CaptionKeys(frozenset())) for _ in samples]

    def write_keys(table):
        written.append(table)
        return DataFile("f", 1, 0, table.num_rows)

    source = SourceConfig(input=(str(tmp_path),), format="parquet")
    *_, last = read_shard_rows(ShardInfo(str(bad), 18), source, search, write_keys=write_keys)
    outcome = ShardOutcome.from_json(last.column("outcome")[0].as_py())
    assert outcome.status == "failed" and outcome.caption_keys is None and not written


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, laion_captions) -> dict:
    """A tagged count (tiny RAM++ on CPU) of the first concepts of imagekit's, and the files."""
    pytest.importorskip("torch")
    from imagekit import CONCEPTS, tagged_setup

    root = tmp_path_factory.mktemp("tagged")
    setup = tagged_setup(root, laion_captions)
    names = list(CONCEPTS)
    first, later = names[:7], ["dog", *names[7:]]  # "dog" is counted already
    for name, chosen in (("a", first), ("b", later), ("ab", names)):
        path = root / f"{name}.json"
        path.write_text(json.dumps({c: CONCEPTS[c] for c in chosen}))
        setup[name] = path
    common = [a if a != str(setup["concepts"]) else str(setup["a"]) for a in setup["common"]]
    setup["count_a"] = common
    setup["out"] = root / "out"
    invoke(*common, "--out", str(setup["out"]))
    return setup


def test_a_tagged_runs_new_concepts_are_tagged_and_equal_a_fresh_count(tagged, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tagged["out"], out)
    printed = invoke("add-concepts", str(out), str(tagged["b"]))
    assert "captions matched from their stored keys (none parsed)" in printed, printed
    fresh = tmp_path / "fresh"
    fresh_args = [a if a != str(tagged["a"]) else str(tagged["ab"]) for a in tagged["count_a"]]
    invoke(*fresh_args, "--out", str(fresh))

    got, want = comparable_tables(out), comparable_tables(fresh)
    for name in (*COMPARED, "hits"):  # hits too: the new concepts' samples are in it
        assert got[name] == want[name], name
    new = {r["concept"]: r for r in got["frequencies"]}
    assert all(new[c]["image_count"] is not None for c in ("dress", "bag"))
    assert sum(new[c]["image_count"] > 0 for c in ("dress", "bag")) >= 1

    parent, run = runs(out)
    reference = runs(fresh)[-1]
    assert (run["kind"], run["parent_run_id"]) == ("add-concepts", parent["run_id"])
    for column in ("concepts", "concept_set_hash", "text_hits", "text_and_image", "images_decoded"):
        assert run[column] == reference[column], column
    # The fingerprint is a fresh count's with the enlarged file: a recount has nothing to do.
    plan = invoke("recount", str(out), "--dry-run")
    assert "unchanged 2" in plan and "configuration:" not in plan
    keys = OutputStore(str(out)).snapshot()["caption_keys"].to_table()
    assert keys.num_rows == run["samples_counted"]


def test_tagging_new_concepts_is_refused_when_the_input_changed(tagged, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tagged["out"], out)
    before = runs(out)
    shards = tagged["root"] / "shards"
    added = shards / "99999.tar"
    shutil.copy(next(shards.glob("*.tar")), added)  # the copy's run counted the shards without it
    try:
        refused = invoke("add-concepts", str(out), str(tagged["b"]), code=2)
    finally:
        added.unlink()
    assert "the input changed" in refused and "1 shards added" in refused, refused
    assert "recount" in refused and runs(out) == before


def test_with_text_only_a_tagged_runs_new_concepts_have_no_image_counts(tagged, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tagged["out"], out)
    before = {r["concept"]: r for r in comparable_tables(out)["frequencies"]}
    more = tmp_path / "more.txt"
    more.write_text("dog\npuppy\nt-shirt\n")
    printed = invoke("add-concepts", str(out), str(more), "--text-only")
    assert "NULL" in printed and "without it tags their images" in printed

    after = {r["concept"]: r for r in comparable_tables(out)["frequencies"]}
    new_hash = after["dog"]["concept_set_hash"]
    assert new_hash != before["dog"]["concept_set_hash"]
    assert {c: r | {"concept_set_hash": new_hash} for c, r in before.items()} == {
        c: after[c] for c in before
    }
    for name in ("puppy", "t-shirt"):
        row = after[name]
        assert row["text_count"] is not None and row["tagger"] == "rampp"
        image = ("image_count", "integrated_count", "image_counts", "integrated_counts")
        assert all(row[c] is None for c in (*image, "image_threshold", "score_floor")), row
    # A recount would take these counts as a tagged count's: it must read every shard.
    refused = invoke("recount", str(out), "--dry-run", code=2)
    assert "concepts_without_image_counts: 2 -> None" in refused and "--full" in refused


def test_stored_keys_give_the_rows_a_parse_gives_and_fail_a_shard_they_do_not_describe(
    files, tmp_path
):
    matcher = ConceptMatcher.build(load_concepts(str(files["ab"])), load_pipeline(None), "paper")
    shard = next(SAMPLE_DIR.glob("*.parquet"))
    source = SourceConfig(input=(str(shard),), format="parquet")
    info = ShardInfo(str(shard), shard.stat().st_size)
    kept: list[pa.Table] = []

    def keep(table: pa.Table) -> DataFile:
        kept.append(table)
        return DataFile("keys.parquet", 1, 0, table.num_rows)

    searcher = TextSearcher(TextConfig("paper"), matcher)
    parsed = list(read_shard_rows(info, source, searcher.search_samples, write_keys=keep))
    stored = list(read_shard_rows(info, source, StoredKeysSearch(kept[0], matcher)))
    assert pa.concat_tables(stored[:-1]).equals(pa.concat_tables(parsed[:-1]))
    assert pa.concat_tables(parsed[:-1]).num_rows > 50  # captions with one of the concepts

    *_, last = read_shard_rows(info, source, StoredKeysSearch(kept[0].slice(1), matcher))
    outcome = ShardOutcome.from_json(last.column("outcome")[0].as_py())
    assert (outcome.status, outcome.error_reason) == ("failed", KEYS_MISSING)
    assert "no stored caption keys" in outcome.error
