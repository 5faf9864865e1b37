"""The first-stage Ray adapter without Ray: one spaCy load per actor, one shard per call yielding
its sample rows in chunks and its outcome row last, and exact counts once the driver assembles
the rows (a retried shard counting once)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from shardkit import truncate_file, write_webdataset_shard

import freqscan.counting.shard as shard_module
import freqscan.text.searcher as searcher_module
from freqscan.concepts import Concept, ConceptSet
from freqscan.config import SourceConfig, TextConfig
from freqscan.counting.assemble import ShardAssembler
from freqscan.counting.shard import SAMPLE_ROWS, ShardOutcome
from freqscan.image.tagger import ImageInput
from freqscan.records import SHARD_FAILED, SHARD_OK
from freqscan.runtime.worker import SHARD_TASK, ShardReadWorker
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.pipeline import load_pipeline

PHOTOS = sorted((Path(__file__).parent / "data" / "photos").glob("*.jpg"))
CONCEPTS = ConceptSet((Concept("dog"), Concept("cat"), Concept("car")), "test")
DOG, CAT, CAR = (c.id for c in CONCEPTS.concepts)
CAPTIONS = [
    "a dog on the grass",  # dog
    "two cats and a dog",  # cat, dog
    "nothing to see here",  # no hit
    "a red car parked outside",  # car
    "",  # empty caption: skipped
    "cats",  # cat
    "an empty room",  # no hit
]
SIZE = 24


@pytest.fixture(scope="module")
def matcher():
    return ConceptMatcher.build(CONCEPTS, load_pipeline(None), "paper")


@pytest.fixture(scope="module")
def photos():
    return [p.read_bytes() for p in PHOTOS]


def write_shard(path, photos, captions=CAPTIONS, images=True):
    samples = []
    for i, caption in enumerate(captions):
        sample = {"key": f"{i:09d}", "txt": caption, "json": {"url": f"http://x/{i}.jpg"}}
        if images and i % 3 != 2:  # every third sample has no image
            sample["jpg"] = photos[i % len(photos)]
        samples.append(sample)
    if images:
        samples[0]["jpg"] = b"\x00 not an image" * 8
    samples.append(dict(samples[1]))  # a duplicate key: skipped, not read twice
    write_webdataset_shard(path, samples)
    return str(path)


def task(*paths):
    return pa.Table.from_pylist(
        [{"path": p, "size": os.path.getsize(p), "mtime": None, "etag": None} for p in paths],
        schema=SHARD_TASK,
    )


def split(tables):
    """Sample rows and outcomes of a call's output, checking the outcome ends each shard."""
    rows, outcomes = [], []
    for table in tables:
        assert table.schema == SAMPLE_ROWS
        for r in table.to_pylist():
            if r["outcome"] is None:
                assert not outcomes or outcomes[-1].shard != r["shard"], "row after its outcome"
                rows.append(r)
            else:
                assert table.num_rows == 1, "the outcome row comes alone"
                assert r["key"] is None
                outcomes.append(ShardOutcome.from_json(r["outcome"]))
    return rows, outcomes


def make_worker(paths, matcher, image=None):
    source = SourceConfig(input=tuple(paths), format="webdataset")
    return ShardReadWorker(source, TextConfig(method="paper"), matcher, image)


def test_spacy_loads_once_and_each_call_streams_chunks_then_one_outcome(
    tmp_path, monkeypatch, matcher, photos
):
    loads = []
    real_load = searcher_module.load_pipeline
    monkeypatch.setattr(
        searcher_module, "load_pipeline", lambda name: loads.append(name) or real_load(name)
    )
    monkeypatch.setattr(shard_module, "TEXT_CHUNK", 2)
    paths = [write_shard(tmp_path / f"{i}.tar", photos) for i in range(3)]
    worker = make_worker(paths, matcher)

    for path in paths + paths[:1]:
        tables = list(worker(task(path)))
        rows, outcomes = split(tables)
        # Chunks of at most 2 usable samples (0-1, 2-3, 5-6), then the outcome.
        assert all(t.num_rows <= 2 for t in tables)
        assert tables[-1].column("outcome").null_count == 0
        assert len(outcomes) == 1 and outcomes[0].shard == path
        out = outcomes[0]
        assert out.status == SHARD_OK and out.rows == len(rows) == 4
        assert (out.stats.samples_read, out.stats.samples_counted) == (8, 6)
        assert out.stats.skipped == Counter({"empty_caption": 1, "duplicate_key": 1})
        # Text-only: every yielded row has a text hit, and no image is read or decoded.
        assert all(r["text_concept_ids"] for r in rows)
        assert all(r["image"] is None and r["image_concept_ids"] is None for r in rows)
        assert out.images_decoded == 0 and not out.images_skipped
        assert [r["key"] for r in rows] == ["000000000", "000000001", "000000003", "000000005"]
        assert rows[1]["url"] == "http://x/1.jpg" and rows[1]["shard"] == path
    assert loads == [None]  # in __init__ only, not per call


def test_one_call_with_two_shards_ends_each_with_its_outcome(tmp_path, matcher, photos):
    paths = [write_shard(tmp_path / f"{i}.tar", photos) for i in range(2)]
    rows, outcomes = split(make_worker(paths, matcher)(task(*paths)))
    assert [o.shard for o in outcomes] == paths
    assert [r["shard"] for r in rows] == [paths[0]] * 4 + [paths[1]] * 4


def test_assembled_rows_give_exact_counts_and_a_retry_counts_once(
    tmp_path, monkeypatch, matcher, photos
):
    monkeypatch.setattr(shard_module, "TEXT_CHUNK", 2)
    paths = [write_shard(tmp_path / f"{i}.tar", photos) for i in range(3)]
    worker = make_worker(paths, matcher)
    asm = ShardAssembler(None)
    done = []
    first = list(worker(task(paths[0])))
    # A task that died after its first chunk, retried in full; then shard 0 delivered again.
    done += asm.add(first[0])
    for path in paths:
        for table in worker(task(path)):
            done += asm.add(table)
    for table in first:
        done += asm.add(table)
    assert sorted(d.outcome.shard for d in done) == sorted(paths)
    assert asm.pending == 0
    text = sum((d.tally.text for d in done), Counter())
    assert text == Counter({DOG: 2 * 3, CAT: 2 * 3, CAR: 1 * 3})
    for d in done:
        assert d.tally.text == Counter({DOG: 2, CAT: 2, CAR: 1})
        assert d.tally.image == Counter() and d.tally.image_grid == {}
        assert [h["key"] for h in d.hits.to_pylist()] == [
            "000000000",
            "000000001",
            "000000003",
            "000000005",
        ]
        assert d.hits.to_pylist()[1]["text_concept_ids"] == sorted([DOG, CAT])


def test_image_mode_yields_rows_with_a_text_hit_or_a_decoded_image(
    tmp_path, monkeypatch, matcher, photos
):
    monkeypatch.setattr(shard_module, "IMAGE_CHUNK", 3)
    path = write_shard(tmp_path / "0.tar", photos)
    worker = make_worker([path], matcher, ImageInput(SIZE))
    tables = list(worker(task(path)))
    rows, (out,) = split(tables)
    assert all(t.num_rows <= 3 for t in tables)
    # 0: corrupt image, caption hit; 1: image + hit; 2: no image, no hit (left out);
    # 3: image + hit; 4: empty caption (skipped); 5: no image, hit; 6: image, no hit.
    assert [r["key"] for r in rows] == [
        "000000000",
        "000000001",
        "000000003",
        "000000005",
        "000000006",
    ]
    by_key = {r["key"]: r for r in rows}
    assert by_key["000000000"]["image"] is None
    assert by_key["000000005"]["image"] is None
    for key in ("000000001", "000000003", "000000006"):
        assert len(by_key[key]["image"]) == SIZE * SIZE * 3
    assert by_key["000000006"]["text_concept_ids"] == []
    assert out.rows == len(rows) == 5
    assert out.images_decoded == 3
    assert out.images_skipped == Counter({"undecodable_image": 1, "missing_image": 2})
    assert all(r["image_concept_ids"] is None and r["image_scores"] is None for r in rows)


def test_a_shard_cut_short_reports_failed_and_its_rows_are_discarded(
    tmp_path, monkeypatch, matcher, photos
):
    monkeypatch.setattr(shard_module, "TEXT_CHUNK", 2)
    captions = [f"a dog number {i}" for i in range(40)]
    path = write_shard(tmp_path / "0.tar", photos, captions, images=False)
    truncate_file(path, os.path.getsize(path) * 2 // 3)
    worker = make_worker([path], matcher)
    tables = list(worker(task(path)))
    rows, (out,) = split(tables)
    assert out.status == SHARD_FAILED and out.error_reason == "truncated_tar"
    assert 0 < out.rows == len(rows) < 40
    asm = ShardAssembler(None)
    done = [d for t in reversed(tables) for d in asm.add(t)]
    assert len(done) == 1 and done[0].outcome.status == SHARD_FAILED
    assert done[0].tally.text == Counter() and done[0].hits.num_rows == 0
