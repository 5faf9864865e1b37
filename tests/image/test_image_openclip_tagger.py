"""The open_clip tagger against a direct computation, on the tiny random CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from freqscan.concepts import Concept, ConceptSet
from freqscan.image.openclip_tagger import OpenClipTagger, OpenClipTaggerSpec, build_openclip_tagger
from freqscan.image.tagger import ImageInput, Tagger, normalize
from freqscan.image.text_encoder import TINY_CLIP_CONFIG, load_clip


@pytest.fixture(scope="module")
def concepts() -> ConceptSet:
    return ConceptSet(
        (
            Concept("cat", descriptions=("a small furry pet.", "a cat asleep on a sofa.")),
            Concept("bicycle"),
            Concept("harbour", descriptions=("boats moored at a pier.",)),
        ),
        source="test",
    )


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=generator)


def mean_text_embeddings(model, tokenizer, concepts: ConceptSet) -> torch.Tensor:
    rows = []
    with torch.no_grad():
        for c in concepts:
            descs = list(c.descriptions) or [f"a photo of a {c.name}."]
            mean = F.normalize(model.encode_text(tokenizer(descs)), dim=-1).mean(dim=0)
            rows.append(F.normalize(mean, dim=-1))
    return torch.stack(rows)


def test_probabilities_equal_a_direct_computation(concepts, images, tmp_path):
    spec = OpenClipTaggerSpec(
        model=str(TINY_CLIP_CONFIG), pretrained="", center=0.1, temperature=0.05
    )
    tagger = build_openclip_tagger(spec, concepts, threshold=0.6, cache_dir=str(tmp_path))
    # Tagger is not runtime_checkable; check its members instead.
    assert all(hasattr(tagger, member) for member in Tagger.__annotations__)
    assert tagger.name == "openclip" and tagger.to("cpu") is tagger
    assert tagger.input == ImageInput(
        size=64,
        resize="shorter_side_crop",
        resample="bicubic",
        mean=(0.48145466, 0.4578275, 0.40821073),
        std=(0.26862954, 0.26130258, 0.27577711),
    )
    assert tagger.concept_ids.tolist() == [c.id for c in concepts]
    assert tagger.thresholds.tolist() == [0.6, 0.6, 0.6]
    assert tagger.provenance["encoder_identity"] == spec.text_encoder.identity()
    assert tagger.provenance["scoring"] == "sigmoid((cos - center) / temperature)"

    probs = tagger.probabilities(images)
    assert probs.shape == (3, 3) and probs.dtype == torch.float32

    model, tokenizer = load_clip(spec.text_encoder)
    text = mean_text_embeddings(model, tokenizer, concepts)
    with torch.no_grad():
        image = F.normalize(model.encode_image(normalize(images, tagger.input)), dim=-1)
    expected = torch.sigmoid((image @ text.T - 0.1) / 0.05)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    assert list(tmp_path.glob("label-embeddings-*.npz"))


def test_logit_bias_models_use_their_own_calibration(concepts, images, tmp_path):
    config = json.loads(TINY_CLIP_CONFIG.read_text()) | {"init_logit_bias": -3.0}
    path = tmp_path / "freqscan-test-tiny-bias.json"
    path.write_text(json.dumps(config))
    spec = OpenClipTaggerSpec(model=str(path), pretrained="")
    tagger = build_openclip_tagger(spec, concepts, threshold=0.5, cache_dir=str(tmp_path))
    assert tagger.provenance["scoring"] == "sigmoid(logit_scale.exp() * cos + logit_bias)"

    model, tokenizer = load_clip(spec.text_encoder)
    text = mean_text_embeddings(model, tokenizer, concepts)
    with torch.no_grad():
        image = F.normalize(model.encode_image(normalize(images, tagger.input)), dim=-1)
        expected = torch.sigmoid(model.logit_scale.exp() * (image @ text.T) + model.logit_bias)
    torch.testing.assert_close(tagger.probabilities(images), expected, atol=1e-5, rtol=0)


def test_rejects_wrong_inputs(concepts):
    spec = OpenClipTaggerSpec(model=str(TINY_CLIP_CONFIG), pretrained="")
    text = np.eye(3, 32, dtype=np.float32)
    ids = np.array([c.id for c in concepts], dtype=np.int64)
    tagger = OpenClipTagger(spec, ids, text, threshold=0.5)
    with pytest.raises(ValueError, match="uint8"):
        tagger.probabilities(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="normalised"):
        OpenClipTagger(spec, ids, 2 * text, threshold=0.5)
    with pytest.raises(ValueError, match="text_embeddings"):
        OpenClipTagger(spec, ids[:2], text, threshold=0.5)
    with pytest.raises(ValueError, match="temperature"):
        OpenClipTaggerSpec(temperature=0.0)
