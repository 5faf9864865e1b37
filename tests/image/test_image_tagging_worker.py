"""The tagging stage without Ray: ImageTagWorker on CPU with a tiny random RAM++ (open set, mean
descriptions), checked against the model computed directly; scores_above_floor on a hand-made
matrix; the closed set's per-tag thresholds and score floor."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from freqscan.concepts import Concept, ConceptSet
from freqscan.config import DEFAULT_IMAGE_THRESHOLD, ImageConfig
from freqscan.counting.shard import SAMPLE_ROWS, ShardOutcome
from freqscan.image.factory import (
    RamPlusTagger,
    build_tagger,
    image_input,
    label_embeddings_for,
    rampp_tag_concepts,
    rampp_tag_thresholds,
    run_thresholds,
)
from freqscan.image.preprocess import decode_image
from freqscan.image.rampp import create_rampp
from freqscan.image.rampp_checkpoint import load_rampp, save_upstream_checkpoint
from freqscan.image.tagger import ImageInput, normalize
from freqscan.image.text_encoder import TINY_CLIP_CONFIG
from freqscan.runtime.tagging import ImageTagWorker, autocast_dtype, scores_above_floor

PHOTOS = sorted((Path(__file__).parents[1] / "data" / "photos").glob("*.[jp][pn]g"))
CONCEPTS = ConceptSet(
    (
        Concept("dog", descriptions=("a photo of a dog.", "a furry pet that barks.")),
        Concept("car", descriptions=("a photo of a car.",)),
        Concept("tree"),
        Concept("shirt", descriptions=("a photo of a shirt.", "a garment.", "with sleeves.")),
        Concept("lamp"),
    ),
    "test",
)
SPEC = ImageInput(192)  # the tiny arch's input


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tagging")
    torch.manual_seed(0)
    checkpoint = root / "ram_plus_tiny.pth"
    save_upstream_checkpoint(create_rampp("tiny"), checkpoint)
    config = ImageConfig(
        tagger="rampp",
        arch="tiny",
        checkpoint=str(checkpoint),
        text_encoder=str(TINY_CLIP_CONFIG),
        text_encoder_pretrained="",
        description_mode="mean",
        embedding_cache=str(root / "cache"),
    )
    labels = label_embeddings_for(config, CONCEPTS)
    pixels = [decode_image(p.read_bytes(), SPEC)[0] for p in PHOTOS]
    # The scores computed here, directly from the checkpoint and the label embeddings.
    model = load_rampp(checkpoint, "tiny")
    model.set_label_embeddings(torch.from_numpy(labels.embeddings), torch.from_numpy(labels.mask))
    with torch.no_grad():
        probs = torch.sigmoid(model(normalize(torch.from_numpy(np.stack(pixels)), SPEC))).numpy()
    # A floor in the middle of the largest gap near the median, so no score sits within
    # rounding distance of it and about half the scores are kept.
    flat = np.sort(probs.ravel())
    mid = len(flat) // 2
    window = range(mid - len(flat) // 4, mid + len(flat) // 4)
    gap = max(window, key=lambda i: flat[i + 1] - flat[i])
    floor = float(flat[gap] + flat[gap + 1]) / 2
    assert flat[gap + 1] - flat[gap] > 1e-5
    return {
        "config": config,
        "labels": labels,
        "pixels": pixels,
        "probs": probs,
        "floor": floor,
        "checkpoint": checkpoint,
    }


@pytest.fixture(scope="module")
def worker(setup):
    """One worker at the test floor, built once (it loads the checkpoint)."""
    return ImageTagWorker(setup["config"], CONCEPTS, setup["labels"], setup["floor"])


def _row(key, pixels=None, text=()):
    return {
        "shard": "s.tar",
        "key": key,
        "url": None,
        "caption": f"caption {key}",
        "metadata": None,
        "text_concept_ids": list(text),
        "image": None if pixels is None else pixels.tobytes(),
    }


def test_worker_scores_rows_with_images_and_passes_the_rest_through(setup, worker):
    pixels, probs, floor = setup["pixels"], setup["probs"], setup["floor"]
    outcome = {"shard": "s.tar", "outcome": ShardOutcome("s.tar", rows=len(pixels) + 2).to_json()}
    # Images in two chunks of the table, interleaved with rows without one and the outcome row.
    rows = [_row("k00", pixels[0], [1]), _row("k01", None, [2])]
    rows += [_row(f"k{i + 2:02d}", p) for i, p in enumerate(pixels[1:6])]
    more = [_row("k07", None, [3]), outcome]
    more += [_row(f"k{i + 9:02d}", p) for i, p in enumerate(pixels[6:])]
    batch = pa.concat_tables(
        [pa.Table.from_pylist(rows, schema=SAMPLE_ROWS), pa.Table.from_pylist(more, SAMPLE_ROWS)]
    )
    out = worker(batch)

    expected_columns = [n for n in SAMPLE_ROWS.names if n != "image"]
    assert sorted(out.column_names) == sorted(expected_columns)
    for name in expected_columns:
        assert out.schema.field(name).type == SAMPLE_ROWS.field(name).type, name
    assert out.num_rows == batch.num_rows
    assert out.column("key").to_pylist() == batch.column("key").to_pylist()
    assert out.column("outcome").to_pylist() == batch.column("outcome").to_pylist()
    assert (
        out.column("text_concept_ids").to_pylist() == batch.column("text_concept_ids").to_pylist()
    )

    ids = setup["labels"].concept_ids
    assert ids.tolist() == [c.id for c in CONCEPTS]
    got = out.to_pylist()
    image_rows = [r for r in got if r["key"] is not None and r["key"] not in ("k01", "k07")]
    assert len(image_rows) == len(pixels)
    kept = 0
    for r, p in zip(image_rows, probs, strict=True):
        keep = p >= floor
        assert r["image_concept_ids"] == ids[keep].tolist(), r["key"]
        np.testing.assert_allclose(r["image_scores"], p[keep], atol=1e-5, rtol=0)
        assert all(s >= floor for s in r["image_scores"])
        kept += int(keep.sum())
    assert 0 < kept < probs.size
    for r in got:
        if r["key"] in ("k01", "k07") or r["outcome"] is not None:
            assert r["image_concept_ids"] is None and r["image_scores"] is None


def test_a_samples_scores_do_not_depend_on_its_batch(setup):
    """Bit for bit, however the stream batched it: a retried shard stores the same floats."""
    config = dataclasses.replace(setup["config"], batch_size=4)
    worker = ImageTagWorker(config, CONCEPTS, setup["labels"], 0.0)
    pixels = setup["pixels"]
    rows = [_row(f"k{i}", p) for i, p in enumerate(pixels)]
    together = worker(pa.Table.from_pylist(rows, schema=SAMPLE_ROWS))
    for i, p in enumerate(pixels):
        alone = worker(pa.Table.from_pylist([_row(f"k{i}", p)], schema=SAMPLE_ROWS))
        assert alone.column("image_scores")[0] == together.column("image_scores")[i], i


def test_worker_on_a_batch_without_images_or_without_rows(setup):
    worker = ImageTagWorker(setup["config"], CONCEPTS, setup["labels"], 0.0)
    outcome = {"shard": "s.tar", "outcome": ShardOutcome("s.tar").to_json()}
    batch = pa.Table.from_pylist([_row("a", None, [1]), outcome], schema=SAMPLE_ROWS)
    out = worker(batch)
    # Even at floor 0, rows without an image keep null lists (not every concept at score 0).
    assert out.column("image_concept_ids").to_pylist() == [None, None]
    assert out.column("image_scores").to_pylist() == [None, None]
    empty = worker(SAMPLE_ROWS.empty_table())
    assert empty.num_rows == 0 and "image" not in empty.column_names


def test_worker_on_an_image_column_nulled_by_arrow_compute(setup, worker):
    """A null slot may keep a non-empty byte range in Arrow (``pc.if_else`` leaves the old
    bytes there); such a row has no image and the others are scored as usual."""
    pixels, probs, floor = setup["pixels"][:3], setup["probs"][:3], setup["floor"]
    batch = pa.Table.from_pylist([_row(f"k{i}", p) for i, p in enumerate(pixels)], SAMPLE_ROWS)
    nulled = pc.if_else(
        pa.array([False, True, False]), pa.scalar(None, pa.binary()), batch.column("image")
    )
    batch = batch.set_column(batch.schema.get_field_index("image"), "image", nulled)
    assert batch.column("image").null_count == 1
    out = worker(batch).to_pylist()
    assert out[1]["image_concept_ids"] is None and out[1]["image_scores"] is None
    ids = setup["labels"].concept_ids
    for r, p in ((out[0], probs[0]), (out[2], probs[2])):
        assert r["image_concept_ids"] == ids[p >= floor].tolist()
        np.testing.assert_allclose(r["image_scores"], p[p >= floor], atol=1e-5, rtol=0)


def test_build_tagger_for_the_open_set(setup):
    config, labels = setup["config"], setup["labels"]
    tagger = build_tagger(config, CONCEPTS, labels, "cpu", checkpoint_sha256="abc")
    assert isinstance(tagger, RamPlusTagger) and tagger.name == "rampp"
    assert tagger.input == SPEC == image_input(config)
    assert tagger.concept_ids.tolist() == [c.id for c in CONCEPTS]
    assert tagger.thresholds.tolist() == [DEFAULT_IMAGE_THRESHOLD] * len(CONCEPTS.concepts)
    assert tagger.provenance["description_mode"] == "mean"
    assert tagger.provenance["label_embeddings"] == labels.key
    assert tagger.provenance["checkpoint_sha256"] == "abc"
    images = torch.from_numpy(np.stack(setup["pixels"][:3]))
    probs = tagger.probabilities(images)
    assert probs.dtype == torch.float32 and probs.shape == (3, len(CONCEPTS.concepts))
    np.testing.assert_allclose(probs.numpy(), setup["probs"][:3], atol=1e-5, rtol=0)


def test_rampp_tagger_is_the_sigmoid_of_the_model(setup):
    model = load_rampp(setup["checkpoint"], "tiny")  # closed set: the checkpoint's own tags
    k = model.num_tags
    ids = np.arange(100, 100 + k, dtype=np.int64)
    tagger = RamPlusTagger(model, "rampp-closed", ids, np.full(k, 0.65), {"tagger": "x"})
    assert tagger.input == ImageInput(192, "squash", "bilinear")
    images = torch.from_numpy(np.stack(setup["pixels"][:2]))
    with torch.no_grad():
        expected = torch.sigmoid(model(normalize(images, SPEC)))
    probs = tagger.probabilities(images)
    assert probs.shape == (2, k)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=f"model has {k} tags but {k - 1} concepts"):
        RamPlusTagger(model, "rampp-closed", ids[1:], np.full(k - 1, 0.65), {})


def test_scores_above_floor_on_a_hand_made_matrix():
    probs = np.array(
        [
            [0.1, 0.5, 0.9, 0.49999],
            [0.0, 0.0, 0.0, 0.0],
            [0.51, 0.7, 0.2, 1.0],
        ],
        dtype=np.float32,
    )
    concept_ids = np.array([7, 5, 9, 1], dtype=np.int64)
    ids, scores = scores_above_floor(probs, concept_ids, 0.5)
    assert ids.type == pa.list_(pa.int64()) and scores.type == pa.list_(pa.float32())
    assert ids.to_pylist() == [[5, 9], [], [7, 5, 1]]
    assert scores.to_pylist() == [
        [0.5, float(np.float32(0.9))],
        [],
        [float(np.float32(0.51)), float(np.float32(0.7)), 1.0],
    ]
    ids, scores = scores_above_floor(probs, concept_ids, 0.0)
    assert [len(r) for r in ids.to_pylist()] == [4, 4, 4]
    ids, scores = scores_above_floor(np.zeros((0, 4), np.float32), concept_ids, 0.5)
    assert len(ids) == 0 and len(scores) == 0


def test_scores_above_floor_never_stores_a_score_below_the_floor():
    """The kept set is decided in float64 but stored as float32: a float64 probability just
    above the floor must not come back as a float32 just below it."""
    floor = 0.7
    probs = np.array([[floor + 1e-9, 0.7000000300, 0.69999999]], dtype=np.float64)
    ids, scores = scores_above_floor(probs, np.array([1, 2, 3]), floor)
    stored = scores.to_pylist()[0]
    assert all(s >= floor for s in stored), stored
    # What is stored is what a float32 comparison in tally would see.
    assert ids.to_pylist()[0] == [
        i for i, p in zip([1, 2, 3], probs[0], strict=True) if float(np.float32(p)) >= floor
    ]


def test_autocast_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("auto", cuda) == torch.bfloat16
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("fp16", cuda) == torch.float16
    assert autocast_dtype("fp32", cuda) is None


def test_closed_set_thresholds_come_from_rampps_file():
    concepts = rampp_tag_concepts()
    assert len(concepts.concepts) == 4585
    thresholds = run_thresholds(ImageConfig(tagger="rampp-closed", checkpoint="x"), concepts)
    per_tag = [thresholds.per_concept[c.id] for c in concepts]
    assert per_tag == rampp_tag_thresholds().tolist()
    counts = Counter(per_tag)
    assert (counts[0.65], counts[0.8], counts[0.9]) == (3414, 735, 119)
    assert min(per_tag) == 0.45 and max(per_tag) == 1.0
    assert thresholds.floor == min(0.5, min(per_tag)) == 0.45
    by_name = {c.name: thresholds.of(c.id) for c in concepts}
    never = sorted(n for n, t in by_name.items() if t >= 0.99)
    assert never == sorted(
        ["body", "cocktail table", "French", "group", "lie", "show", "see", "set", "singe"]
        + ["stop", "use"]
    )
    assert by_name["singe"] == 0.99 and by_name["body"] == 1.0
    # Every grid value is at or above the floor, so the whole grid is reported.
    assert thresholds.known_grid == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def test_closed_set_with_an_explicit_threshold_or_floor():
    concepts = rampp_tag_concepts()
    one = run_thresholds(
        ImageConfig(tagger="rampp-closed", checkpoint="x", threshold=0.75), concepts
    )
    assert (one.default, one.floor, dict(one.per_concept)) == (0.75, 0.5, {})
    low = run_thresholds(
        ImageConfig(tagger="rampp-closed", checkpoint="x", score_floor=0.4), concepts
    )
    assert low.floor == 0.4 and len(low.per_concept) == 4585
    # The open set: one threshold, default 0.7 over floor 0.5.
    open_set = run_thresholds(ImageConfig(checkpoint="x"), CONCEPTS)
    assert (open_set.default, open_set.floor, dict(open_set.per_concept)) == (0.7, 0.5, {})
