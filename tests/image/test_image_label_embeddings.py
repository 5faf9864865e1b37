"""Open-set label embeddings against direct encoder calls, on the tiny random CLIP."""

from __future__ import annotations

import os

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from freqscan.concepts import Concept, ConceptSet
from freqscan.image import label_embeddings as le
from freqscan.image.errors import ImageSetupError
from freqscan.image.label_embeddings import (
    LabelEmbeddings,
    build_label_embeddings,
    cached_label_embeddings,
    concept_descriptions,
    embedding_key,
)
from freqscan.image.text_encoder import TINY_CLIP_CONFIG, TextEncoderSpec, load_clip

SHARED = "a small animal."


@pytest.fixture(scope="module")
def spec() -> TextEncoderSpec:
    return TextEncoderSpec(model=str(TINY_CLIP_CONFIG), pretrained="")


@pytest.fixture(scope="module")
def clip(spec):
    return load_clip(spec)


@pytest.fixture(scope="module")
def concepts() -> ConceptSet:
    return ConceptSet(
        (
            Concept("tabby cat", descriptions=("a striped cat.", "a cat on a sofa.", SHARED)),
            Concept("Golden Retriever", descriptions=("a large yellow dog.",)),
            Concept("Space Needle"),
            Concept("ferret", descriptions=(SHARED, "a long thin mammal.")),
        ),
        source="test",
    )


def direct(clip, text: str) -> np.ndarray:
    model, tokenizer = clip
    with torch.no_grad():
        return F.normalize(model.encode_text(tokenizer([text])), dim=-1)[0].numpy()


def test_descriptions_are_verbatim_with_a_default_prompt(concepts):
    descs = concept_descriptions(concepts)
    assert descs[0] == ["a striped cat.", "a cat on a sofa.", SHARED]
    assert descs[2] == ["a photo of a Space Needle."]


def test_reweight_rows_equal_direct_encoding(concepts, spec, clip):
    calls = []
    emb = build_label_embeddings(
        concepts, "reweight", spec, batch_size=2, progress=lambda d, t: calls.append((d, t))
    )
    assert emb.embeddings.shape == (4, 3, 32) and emb.embeddings.dtype == np.float32
    assert emb.concept_ids.tolist() == [c.id for c in concepts]
    assert emb.mask.tolist() == [
        [True, True, True],
        [True, False, False],
        [True, False, False],
        [True, True, False],
    ]
    for k, descs in enumerate(concept_descriptions(concepts)):
        for d, text in enumerate(descs):
            np.testing.assert_allclose(emb.embeddings[k, d], direct(clip, text), atol=1e-6)
    assert not emb.embeddings[~emb.mask].any()
    # Six distinct strings (the shared one encoded once), in batches of two.
    assert calls == [(2, 6), (4, 6), (6, 6)]


def test_mean_is_the_renormalised_mean(concepts, spec, clip):
    emb = build_label_embeddings(concepts, "mean", spec, clip=clip)
    assert emb.embeddings.shape == (4, 1, 32) and emb.mask.all()
    for k, descs in enumerate(concept_descriptions(concepts)):
        mean = np.mean([direct(clip, t) for t in descs], axis=0)
        np.testing.assert_allclose(emb.embeddings[k, 0], mean / np.linalg.norm(mean), atol=1e-6)


def test_cache_hit_skips_the_encoder_and_round_trips(concepts, spec, clip, tmp_path, monkeypatch):
    built = cached_label_embeddings(concepts, "reweight", spec, str(tmp_path), clip=clip)
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"label-embeddings-{built.key}.npz"]

    def no_encoder(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(le, "load_clip", no_encoder)
    monkeypatch.setattr(le, "encode_texts", no_encoder)
    loaded = cached_label_embeddings(concepts, "reweight", spec, str(tmp_path))
    for name in ("embeddings", "mask", "concept_ids"):
        assert np.array_equal(getattr(loaded, name), getattr(built, name))
        assert getattr(loaded, name).dtype == getattr(built, name).dtype
    assert (loaded.mode, loaded.key) == (built.mode, built.key)


def test_key_covers_descriptions_order_mode_and_encoder(concepts, spec):
    key = embedding_key(concepts, "reweight", spec)
    changed = ConceptSet(
        (concepts.concepts[0], Concept("Golden Retriever", descriptions=("a big yellow dog.",)))
        + concepts.concepts[2:],
        source="test",
    )
    reordered = ConceptSet(concepts.concepts[::-1], source="test")
    other = TextEncoderSpec(model="ViT-B-16", pretrained="")
    assert (
        len(
            {
                key,
                embedding_key(changed, "reweight", spec),
                embedding_key(reordered, "reweight", spec),
                embedding_key(concepts, "mean", spec),
                embedding_key(concepts, "reweight", other),
            }
        )
        == 5
    )
    assert embedding_key(concepts, "reweight", TextEncoderSpec(str(TINY_CLIP_CONFIG), "")) == key


def test_local_weights_file(concepts, spec, clip, tmp_path):
    weights = tmp_path / "tiny.pt"
    torch.save(clip[0].state_dict(), weights)
    from_file = TextEncoderSpec(model=str(TINY_CLIP_CONFIG), pretrained=str(weights))
    a = build_label_embeddings(concepts, "reweight", spec, clip=clip)
    b = build_label_embeddings(concepts, "reweight", from_file)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.key != b.key

    # Rewrite the file the way a download would (new file, renamed over the old one).
    state = {k: v.clone() for k, v in clip[0].state_dict().items()}
    state["text_projection"] += 1.0
    torch.save(state, tmp_path / "tiny.pt.new")
    identity = from_file.identity()
    os.replace(tmp_path / "tiny.pt.new", weights)
    assert from_file.identity() != identity


def test_openai_tag_builds_with_quick_gelu(monkeypatch):
    seen = {}

    def fake_create_model(name, **kwargs):
        seen.update(kwargs, name=name)
        raise RuntimeError("no download in tests")

    monkeypatch.setattr(open_clip, "create_model", fake_create_model)
    # A tag whose weights cannot be fetched is a user's error, with open_clip's reason.
    with pytest.raises(ImageSetupError, match=r"could not fetch .*\(no download in tests\)"):
        load_clip(TextEncoderSpec())
    assert seen["name"] == "ViT-B-16" and seen["pretrained"] == "openai"
    assert seen["force_quick_gelu"] is True


@pytest.mark.parametrize(
    ("model", "pretrained", "match"),
    [
        ("ViT-Nope", "", "unknown open_clip model"),
        ("missing-config.json", "", "not found"),
        (str(TINY_CLIP_CONFIG), "/no/such/weights.pt", "neither an open_clip tag"),
        ("ViT-B-16", "laion9000", "available"),
    ],
)
def test_clear_errors(model, pretrained, match):
    with pytest.raises(ValueError, match=match):
        load_clip(TextEncoderSpec(model, pretrained))


def test_validation_rejects_misaligned_arrays():
    emb = np.zeros((2, 2, 4), dtype=np.float32)
    emb[:, 0] = 1.0
    mask = np.array([[True, False], [True, False]])
    ids = np.array([1, 2], dtype=np.int64)
    LabelEmbeddings(emb, mask, ids, "reweight", "k")
    with pytest.raises(ValueError, match="padded"):
        LabelEmbeddings(emb + 1.0, mask, ids, "reweight", "k")
    with pytest.raises(ValueError, match="concept_ids"):
        LabelEmbeddings(emb, mask, ids[:1], "reweight", "k")
    with pytest.raises(ValueError, match="mean mode"):
        LabelEmbeddings(emb, mask, ids, "mean", "k")
    with pytest.raises(ValueError, match="description mode"):
        LabelEmbeddings(emb, mask, ids, "max", "k")
