"""The image side end to end through the CLI, on CPU, with a tiny random RAM++ of the real
architecture, on webdataset shards made of real photos and real LAION captions.

The answers are computed here, independently: image and integrated counts from the stored
scores, the stored scores from the model itself, and rethreshold against a fresh run.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from imagekit import tagged_setup
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.concepts import load_concepts
from freqscan.config import THRESHOLD_GRID
from freqscan.image.factory import rampp_tag_concepts, rampp_tag_thresholds
from freqscan.image.label_embeddings import build_label_embeddings
from freqscan.image.preprocess import decode_image
from freqscan.image.rampp_checkpoint import load_rampp
from freqscan.image.tagger import ImageInput, normalize
from freqscan.image.text_encoder import TINY_CLIP_CONFIG, TextEncoderSpec
from freqscan.query import run_query
from freqscan.tables.schemas import grid_field

pytestmark = pytest.mark.usefixtures("ray_local")


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def setup(tmp_path_factory, laion_captions):
    return tagged_setup(tmp_path_factory.mktemp("image-e2e"), laion_captions)


@pytest.fixture(scope="module")
def run07(setup):
    out = setup["root"] / "out07"
    result = invoke(*setup["common"], "--out", str(out))
    assert "truncated_image: 1" in result.output and "undecodable_image: 1" in result.output
    return out


def _hits(out):
    return run_query(str(out), "SELECT * FROM hits ORDER BY shard, key").to_pylist()


def _expected(hits, threshold):
    image, integrated = Counter(), Counter()
    both = misaligned = 0
    for h in hits:
        shown = {
            i
            for i, s in zip(h["image_concept_ids"] or [], h["image_scores"] or [], strict=True)
            if s > threshold
        }
        text = set(h["text_concept_ids"] or [])
        image.update(shown)
        integrated.update(text & shown)
        if text and shown:
            both += 1
            misaligned += not (text & shown)
    return image, integrated, both, misaligned


def test_image_and_integrated_counts_equal_a_direct_count_of_stored_scores(run07):
    hits = _hits(run07)
    freqs = run_query(str(run07), "SELECT * FROM frequencies").to_pylist()
    image, integrated, both, misaligned = _expected(hits, 0.7)
    assert sum(image.values()) > 0 and sum(integrated.values()) > 0 and misaligned > 0
    for row in freqs:
        assert row["image_count"] == image[row["concept_id"]], row["concept"]
        assert row["integrated_count"] == integrated[row["concept_id"]], row["concept"]
        for t in THRESHOLD_GRID:
            img_t, int_t, _, _ = _expected(hits, t)
            assert row["image_counts"][grid_field(t)] == img_t[row["concept_id"]]
            assert row["integrated_counts"][grid_field(t)] == int_t[row["concept_id"]]
        assert row["tagger"] == "rampp" and row["description_mode"] == "reweight"
        assert row["image_threshold"] == 0.7 and row["score_floor"] == 0.5
        assert len(row["tagger_checkpoint_sha256"]) == 64
    run = run_query(str(run07), "SELECT * FROM runs").to_pylist()[-1]
    assert run["samples_counted"] == 40
    assert (run["text_and_image"], run["misaligned_samples"]) == (both, misaligned)
    assert run["misalignment_degree"] == pytest.approx(misaligned / 40)
    # Every stored score is at or above the floor.
    assert all(s >= 0.5 for h in hits for s in h["image_scores"] or [])


def test_bad_images_are_counted_and_the_samples_still_count_for_text(run07):
    shards = run_query(
        str(run07), "SELECT shard, images_decoded, images_skipped FROM shards ORDER BY shard"
    ).to_pylist()
    assert [s["images_decoded"] for s in shards] == [17, 20]
    assert dict(shards[0]["images_skipped"]) == {
        "undecodable_image": 1,
        "truncated_image": 1,
        "missing_image": 1,
    }
    hits = {h["key"]: h for h in _hits(run07)}
    for bad in ("000000003", "000000005", "000000007"):  # captions still matched
        assert hits[bad]["text_concept_ids"] and hits[bad]["image_concept_ids"] is None


def test_stored_scores_equal_the_model_computed_directly(setup, run07):
    concepts = load_concepts(str(setup["concepts"]))
    labels = build_label_embeddings(
        concepts, "reweight", TextEncoderSpec(str(TINY_CLIP_CONFIG), "")
    )
    model = load_rampp(str(setup["checkpoint"]), "tiny")
    model.set_label_embeddings(torch.from_numpy(labels.embeddings), torch.from_numpy(labels.mask))
    spec = ImageInput(192)
    hits = {h["key"]: h for h in _hits(run07)}
    for sample in setup["samples"][:3]:
        data = next(v for k, v in sample.items() if k in ("jpg", "png"))
        pixels, _ = decode_image(data, spec)
        with torch.no_grad():
            probs = torch.sigmoid(model(normalize(torch.from_numpy(pixels[None].copy()), spec)))[
                0
            ].numpy()
        stored = dict(
            zip(
                hits[sample["key"]]["image_concept_ids"],
                hits[sample["key"]]["image_scores"],
                strict=True,
            )
        )
        expected = {int(i): p for i, p in zip(labels.concept_ids, probs, strict=True) if p >= 0.5}
        assert stored.keys() == expected.keys()
        np.testing.assert_allclose(
            [stored[i] for i in expected], list(expected.values()), atol=1e-5
        )


def test_rethreshold_equals_a_fresh_run_at_that_threshold(setup, run07):
    invoke("rethreshold", str(run07), "--threshold", "0.6")
    fresh = setup["root"] / "out06"
    invoke(*setup["common"], "--out", str(fresh), "--threshold", "0.6")
    cols = (
        "concept_id, text_count, image_count, integrated_count, image_counts, "
        "integrated_counts, image_threshold"
    )
    sql = f"SELECT {cols} FROM frequencies ORDER BY concept_id"
    assert run_query(str(run07), sql).to_pylist() == run_query(str(fresh), sql).to_pylist()
    sql = (
        "SELECT shard, concept_id, text_count, image_count, integrated_count, image_counts "
        "FROM shard_counts ORDER BY shard, concept_id"
    )
    assert run_query(str(run07), sql).to_pylist() == run_query(str(fresh), sql).to_pylist()
    sql = (
        "SELECT text_and_image, misaligned_samples, misalignment_degree, image_threshold "
        "FROM runs ORDER BY finished_at DESC LIMIT 1"
    )
    re_run, fresh_run = (
        run_query(str(run07), sql).to_pylist(),
        run_query(str(fresh), sql).to_pylist(),
    )
    assert re_run == fresh_run and re_run[0]["image_threshold"] == 0.6
    kinds = (
        run_query(str(run07), "SELECT kind FROM runs ORDER BY finished_at")
        .column("kind")
        .to_pylist()
    )
    assert kinds == ["count", "rethreshold"]
    # Below the floor the scores were never stored: refused.
    result = CliRunner().invoke(app, ["rethreshold", str(run07), "--threshold", "0.4"])
    assert result.exit_code == 2 and "score floor" in result.output


def test_label_embeddings_are_built_once_per_concept_set(setup, run07):
    # Two runs (run07 and, by now, the fresh 0.6 run) share one cached file.
    invoke(*setup["common"], "--out", str(setup["root"] / "out-cache"))
    assert len(list((setup["root"] / "cache").glob("label-embeddings-*.npz"))) == 1


def test_openclip_tagger_counts_equal_a_direct_count_of_stored_scores(setup):
    out = setup["root"] / "out-clip"
    common = setup["common"]
    args = common[: common.index("--tagger")] + [
        "--tagger", "openclip", "--text-encoder", str(TINY_CLIP_CONFIG),
        "--text-encoder-pretrained", "", "--embedding-cache", str(setup["root"] / "cache"),
        "--clip-center", "0.0", "--clip-temperature", "0.05", "--threshold", "0.55",
    ]  # fmt: skip
    invoke(*args, "--out", str(out))
    image, integrated, _, misaligned = _expected(_hits(out), 0.55)
    assert sum(image.values()) > 0
    for row in run_query(str(out), "SELECT * FROM frequencies").to_pylist():
        assert row["tagger"] == "openclip" and row["tagger_checkpoint_sha256"] is None
        assert row["image_count"] == image[row["concept_id"]]
        assert row["integrated_count"] == integrated[row["concept_id"]]
    run = run_query(str(out), "SELECT misaligned_samples FROM runs").to_pylist()[-1]
    assert run["misaligned_samples"] == misaligned


def test_closed_set_uses_rampp_tags_and_their_per_tag_thresholds(setup):
    out = setup["root"] / "out-closed"
    common = setup["common"]
    args = [a for a in common[: common.index("--tagger")] if a != str(setup["concepts"])]
    args.remove("--concepts")
    invoke(*args, "--tagger", "rampp-closed", "--checkpoint", str(setup["checkpoint"]),
           "--rampp-arch", "tiny", "--out", str(out))  # fmt: skip
    tags = rampp_tag_concepts()
    per_tag = dict(zip((c.id for c in tags), rampp_tag_thresholds(), strict=True))
    image, integrated = Counter(), Counter()
    for h in _hits(out):
        shown = {
            i
            for i, s in zip(h["image_concept_ids"] or [], h["image_scores"] or [], strict=True)
            if s > per_tag[i]
        }
        image.update(shown)
        integrated.update(set(h["text_concept_ids"] or []) & shown)
    rows = run_query(str(out), "SELECT * FROM frequencies").to_pylist()
    assert len(rows) == 4585 and sum(image.values()) > 0
    for row in rows:
        assert row["image_threshold"] == per_tag[row["concept_id"]]
        assert row["image_count"] == image[row["concept_id"]]
        assert row["integrated_count"] == integrated[row["concept_id"]]
    # The floor is the lowest per-tag threshold, so every tag's own threshold is applicable.
    assert rows[0]["score_floor"] == min(0.5, min(per_tag.values()))
    run = run_query(str(out), "SELECT image_threshold, tagger FROM runs").to_pylist()[-1]
    assert run == {"image_threshold": None, "tagger": "rampp-closed"}
