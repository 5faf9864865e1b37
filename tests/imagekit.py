"""A tiny random RAM++ of the real architecture and webdataset shards of real photos and real
LAION captions: what the tagged-count tests run on (CPU, seconds)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from shardkit import write_webdataset_shard

from freqscan.concepts import load_concepts
from freqscan.image.label_embeddings import build_label_embeddings
from freqscan.image.preprocess import decode_image
from freqscan.image.rampp import create_rampp
from freqscan.image.rampp_checkpoint import save_upstream_checkpoint
from freqscan.image.tagger import ImageInput, normalize
from freqscan.image.text_encoder import TINY_CLIP_CONFIG, TextEncoderSpec

PHOTOS = sorted((Path(__file__).parent / "data" / "photos").glob("*.[jp][pn]g"))
CONCEPTS = {
    "dog": ["a photo of a dog.", "a furry pet with four legs.", "an animal that barks."],
    "woman": ["a photo of a woman.", "an adult female person."],
    "car": ["a photo of a car."],
    "shirt": ["a photo of a shirt.", "a garment for the upper body.", "clothing with sleeves."],
    "flower": [],
    "house": ["a photo of a house.", "a building people live in."],
    "tree": [],
    "table": ["a photo of a table."],
    "dress": ["a photo of a dress.", "a one-piece garment."],
    "bag": [],
}


def tagged_setup(
    root: Path, laion_captions: list[str], samples: int = 40, shards: int = 2
) -> dict[str, Any]:
    """Concepts, a tiny checkpoint, ``shards`` webdataset shards of ``samples`` samples in all
    (one corrupt, one truncated and one missing image), and the count command line for them."""
    concepts = root / "concepts.json"
    concepts.write_text(json.dumps(CONCEPTS))
    torch.manual_seed(0)
    model = create_rampp("tiny")
    _spread_logits(model, load_concepts(str(concepts)))
    checkpoint = root / "ram_plus_tiny.pth"
    save_upstream_checkpoint(model, checkpoint)

    # Captions that mention the concepts, so that text and image both have hits.
    captions = [
        c for c in laion_captions if any(w in c.lower().split() for w in ("dog", "woman", "shirt"))
    ]
    photos = [p.read_bytes() for p in PHOTOS]
    rows = [
        {
            "key": f"{i:09d}",
            "txt": captions[i],
            PHOTOS[i % len(PHOTOS)].suffix[1:]: photos[i % len(photos)],
        }
        for i in range(samples)
    ]
    rows[3]["jpg"] = b"\x00not an image at all" * 10
    rows[5] = {
        "key": rows[5]["key"],
        "txt": rows[5]["txt"],
        "jpg": photos[0][: len(photos[0]) // 2],
    }
    rows[7] = {"key": rows[7]["key"], "txt": rows[7]["txt"]}
    shard_dir = root / "shards"
    shard_dir.mkdir()
    per = -(-samples // shards)
    for s in range(shards):
        write_webdataset_shard(shard_dir / f"{s:05d}.tar", rows[s * per : (s + 1) * per])
    common = [
        "count", "--input", str(shard_dir), "--format", "webdataset",
        "--concepts", str(concepts), "--tagger", "rampp", "--checkpoint", str(checkpoint),
        "--rampp-arch", "tiny", "--text-encoder", str(TINY_CLIP_CONFIG),
        "--text-encoder-pretrained", "", "--embedding-cache", str(root / "cache"),
        "--description-mode", "reweight", "--image-batch-size", "8",
    ]  # fmt: skip
    return {
        "root": root,
        "common": common,
        "checkpoint": checkpoint,
        "concepts": concepts,
        "samples": rows,
    }


def _spread_logits(model, concepts) -> None:
    """Rescale the random head so the photos' probabilities spread over the whole threshold grid
    (mean logit 0.85, std 1.5) instead of all sitting near 0.55."""
    labels = build_label_embeddings(
        concepts, "reweight", TextEncoderSpec(str(TINY_CLIP_CONFIG), "")
    )
    probe = copy.deepcopy(model)  # the checkpoint keeps the closed-set label_embed
    probe.set_label_embeddings(torch.from_numpy(labels.embeddings), torch.from_numpy(labels.mask))
    spec = ImageInput(192)
    pixels = np.stack([decode_image(p.read_bytes(), spec)[0] for p in PHOTOS])
    with torch.no_grad():
        logits = probe(normalize(torch.from_numpy(pixels), spec))
        scale = 1.5 / logits.std()
        model.fc.weight.mul_(scale)
        model.fc.bias.copy_(0.85 - scale * (logits.mean() - model.fc.bias))
