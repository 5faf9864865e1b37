"""Build the tagger an :class:`~freqscan.config.ImageConfig` selects, on a given device.

The label embeddings of open-set tagging are computed once per run on the driver's side
(:func:`label_embeddings_for`) and handed to every tagging actor, never recomputed per worker.
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np
import torch

from freqscan.concepts import Concept, ConceptSet
from freqscan.config import DEFAULT_IMAGE_THRESHOLD, DEFAULT_SCORE_FLOOR, ImageConfig
from freqscan.counting.tally import Thresholds
from freqscan.image.label_embeddings import LabelEmbeddings, cached_label_embeddings
from freqscan.image.openclip_tagger import OpenClipTagger, OpenClipTaggerSpec, input_for
from freqscan.image.rampp import RamPlus, RamPlusArch, get_arch
from freqscan.image.rampp_checkpoint import load_rampp
from freqscan.image.tagger import ImageInput, Tagger, normalize
from freqscan.image.text_encoder import TextEncoderSpec

RAMPP_TAGS = "rampp"  # the concept set name of RAM++'s built-in tags (`--concepts rampp`)


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "freqscan", "label-embeddings")


def rampp_tag_concepts() -> ConceptSet:
    """RAM++'s 4,585 built-in tags, in checkpoint order."""
    text = (resources.files("freqscan.data") / "rampp" / "ram_tag_list.txt").read_text("utf-8")
    return ConceptSet(tuple(Concept(name) for name in text.split("\n")), RAMPP_TAGS)


def rampp_tag_thresholds() -> np.ndarray:
    """The per-tag thresholds RAM++ ships for its built-in tags, in tag order."""
    root = resources.files("freqscan.data") / "rampp"
    return np.array((root / "ram_tag_list_threshold.txt").read_text("utf-8").split(), float)


def run_thresholds(config: ImageConfig, concepts: ConceptSet) -> Thresholds:
    """The thresholds and score floor a run applies (closed set: per tag unless overridden)."""
    if config.tagger == "rampp-closed" and config.threshold is None:
        per_tag = dict(zip((c.id for c in concepts), rampp_tag_thresholds().tolist(), strict=True))
        floor = config.score_floor
        if floor is None:
            floor = min(DEFAULT_SCORE_FLOOR, *per_tag.values())
        return Thresholds(DEFAULT_IMAGE_THRESHOLD, floor, per_tag)
    threshold = DEFAULT_IMAGE_THRESHOLD if config.threshold is None else config.threshold
    floor = DEFAULT_SCORE_FLOOR if config.score_floor is None else config.score_floor
    return Thresholds(threshold, floor)


def text_encoder_spec(config: ImageConfig) -> TextEncoderSpec:
    return TextEncoderSpec(config.text_encoder, config.text_encoder_pretrained)


def label_embeddings_for(
    config: ImageConfig, concepts: ConceptSet, device: str | torch.device = "cpu"
) -> LabelEmbeddings | None:
    """The concepts' label embeddings (cached by content hash); ``None`` for the closed set."""
    if config.tagger == "rampp-closed":
        return None
    mode = "mean" if config.tagger == "openclip" else config.description_mode
    cache = config.embedding_cache or default_cache_dir()
    return cached_label_embeddings(concepts, mode, text_encoder_spec(config), cache, device=device)


def image_input(config: ImageConfig) -> ImageInput:
    """The preprocessing the CPU stage applies for this tagger (no model is loaded for RAM++)."""
    if config.tagger == "openclip":
        return input_for(text_encoder_spec(config))
    return rampp_input(get_arch(config.arch))


def rampp_input(arch: RamPlusArch) -> ImageInput:
    """RAM++'s preprocessing: squash to the backbone's size, bilinear, ImageNet statistics."""
    return ImageInput(size=arch.img_size, resize="squash", resample="bilinear")


class RamPlusTagger:
    """RAM++ as a :class:`~freqscan.image.tagger.Tagger`: sigmoid of its tag logits.

    Args:
        model: The loaded model, its label embeddings set.
        name: ``rampp`` or ``rampp-closed``.
        concept_ids: The concept of each tag column.
        thresholds: Per-column decision thresholds.
        provenance: What produced the scores.
    """

    def __init__(
        self,
        model: RamPlus,
        name: str,
        concept_ids: np.ndarray,
        thresholds: np.ndarray,
        provenance: dict[str, str],
    ) -> None:
        if model.num_tags != len(concept_ids):
            raise ValueError(f"model has {model.num_tags} tags but {len(concept_ids)} concepts")
        self.model = model.eval()
        self.name = name
        self.input = rampp_input(model.arch)
        self.concept_ids = concept_ids
        self.thresholds = thresholds
        self.provenance = provenance

    def to(self, device: torch.device | str) -> RamPlusTagger:
        self.model.to(device)
        return self

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(normalize(images, self.input)).float())


def build_tagger(
    config: ImageConfig,
    concepts: ConceptSet,
    labels: LabelEmbeddings | None,
    device: str | torch.device = "cpu",
    checkpoint_sha256: str = "",
) -> Tagger:
    """The tagger ``config`` selects, ready on ``device``.

    Args:
        config: Image settings.
        concepts: The run's concept set (RAM++'s tags for ``rampp-closed``).
        labels: From :func:`label_embeddings_for` (``None`` for ``rampp-closed``).
        device: Where to run it.
        checkpoint_sha256: Hash of the RAM++ checkpoint, recorded in provenance.
    """
    thresholds = run_thresholds(config, concepts)
    ids = np.array([c.id for c in concepts], dtype=np.int64)
    per_column = np.array([thresholds.of(int(i)) for i in ids], dtype=np.float64)
    if config.tagger == "openclip":
        assert labels is not None
        spec = OpenClipTaggerSpec(
            config.text_encoder,
            config.text_encoder_pretrained,
            config.clip_center,
            config.clip_temperature,
        )
        return OpenClipTagger(
            spec,
            labels.concept_ids,
            labels.embeddings[:, 0, :],
            thresholds.default,
            device,
            embeddings_key=labels.key,
        )
    model = load_rampp(config.checkpoint, config.arch, map_location="cpu")
    provenance = {"tagger": config.tagger, "arch": config.arch, "checkpoint": config.checkpoint}
    provenance["checkpoint_sha256"] = checkpoint_sha256
    if labels is not None:
        model.set_label_embeddings(
            torch.from_numpy(labels.embeddings), torch.from_numpy(labels.mask)
        )
        provenance.update(description_mode=labels.mode, label_embeddings=labels.key)
        ids = labels.concept_ids
    return RamPlusTagger(model, config.tagger, ids, per_column, provenance).to(device)
