"""A zero-shot open_clip tagger: image embedding vs each concept's averaged description embedding.

CLIP cosines are not probabilities, so they are mapped through a fixed logistic,
``sigmoid((cos - center) / temperature)``, whose two numbers are recorded with every output.
SigLIP models were trained with a sigmoid loss and carry their own calibration
(``logit_scale``, ``logit_bias``), which is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from freqscan.concepts import ConceptSet
from freqscan.image.label_embeddings import cached_label_embeddings
from freqscan.image.tagger import ImageInput, normalize
from freqscan.image.text_encoder import TextEncoderSpec, load_clip

_RESIZE_MODES = {"shortest": "shorter_side_crop", "squash": "squash"}
_RESAMPLES = ("bilinear", "bicubic")


@dataclass(frozen=True)
class OpenClipTaggerSpec:
    """Which open_clip model tags, and how its cosines become probabilities.

    Args:
        model: An open_clip model name or model-config JSON path, as in ``TextEncoderSpec``.
        pretrained: An open_clip tag, a local weights file, or ``""`` (seeded random weights).
        center: The cosine similarity that maps to probability 0.5. Matching image-text pairs of
            OpenAI's ViT-B/16 typically score about 0.3, unrelated ones well below.
        temperature: Cosine units per logit; 0.01 spreads that gap over several logits, as
            CLIP's own learned scale (100) does.
    """

    model: str = "ViT-B-16"
    pretrained: str = "openai"
    center: float = 0.25
    temperature: float = 0.01

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not -1.0 <= self.center <= 1.0:
            raise ValueError(f"center is a cosine similarity in [-1, 1], got {self.center}")

    @property
    def text_encoder(self) -> TextEncoderSpec:
        return TextEncoderSpec(self.model, self.pretrained)


class OpenClipTagger:
    """Implements ``freqscan.image.tagger.Tagger`` with one open_clip model.

    Args:
        spec: The model and the cosine calibration.
        concept_ids: int64 (K,), the concept of each text embedding.
        text_embeddings: (K, C) L2-normalised text embeddings of the same model.
        threshold: The decision threshold of every concept.
        device: Where to run.
        model: ``load_clip(spec.text_encoder)[0]`` when the caller already has it; loaded
            otherwise.
        embeddings_key: ``LabelEmbeddings.key`` of ``text_embeddings``, recorded in provenance.
    """

    name = "openclip"

    def __init__(
        self,
        spec: OpenClipTaggerSpec,
        concept_ids: np.ndarray,
        text_embeddings: np.ndarray,
        threshold: float,
        device: str | torch.device = "cpu",
        model: torch.nn.Module | None = None,
        embeddings_key: str = "",
    ) -> None:
        concept_ids = np.asarray(concept_ids)
        if concept_ids.dtype != np.int64 or concept_ids.ndim != 1:
            raise ValueError(
                f"concept_ids must be int64 (K,), got {concept_ids.dtype} {concept_ids.shape}"
            )
        text = np.asarray(text_embeddings, dtype=np.float32)
        if text.shape[:1] != concept_ids.shape or text.ndim != 2:
            raise ValueError(f"text_embeddings must be ({len(concept_ids)}, C), got {text.shape}")
        if not np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-3):
            raise ValueError("text_embeddings must be L2-normalised")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a probability in [0, 1], got {threshold}")

        self.spec = spec
        model = model if model is not None else load_clip(spec.text_encoder, device)[0]
        self._model = model.eval().to(device)
        self._text = torch.from_numpy(text).to(device)
        self.input = _image_input(self._model.visual.preprocess_cfg)
        self.concept_ids = concept_ids
        self.thresholds = np.full(len(concept_ids), threshold, dtype=np.float64)
        self._siglip = getattr(self._model, "logit_bias", None) is not None
        self.provenance = {
            "tagger": self.name,
            "model": spec.model,
            "pretrained": spec.pretrained,
            "encoder_identity": spec.text_encoder.identity(),
            "center": repr(spec.center),
            "temperature": repr(spec.temperature),
            "scoring": (
                "sigmoid(logit_scale.exp() * cos + logit_bias)"
                if self._siglip
                else "sigmoid((cos - center) / temperature)"
            ),
        }
        if embeddings_key:
            self.provenance["label_embeddings_key"] = embeddings_key

    def to(self, device: torch.device | str) -> OpenClipTagger:
        self._model.to(device)
        self._text = self._text.to(device)
        return self

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S, 3) on the tagger's device -> float32 (B, K) probabilities."""
        size = self.input.size
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (size, size, 3):
            raise ValueError(
                f"expected uint8 (B, {size}, {size}, 3) images, "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        device = self._text.device
        with torch.inference_mode():
            # fp16 on CUDA as the paper's tagging ran under autocast; fp32 on CPU.
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                features = self._model.encode_image(normalize(images.to(device), self.input))
            cos = F.normalize(features.float(), dim=-1) @ self._text.T
            if self._siglip:
                logits = self._model.logit_scale.exp() * cos + self._model.logit_bias
            else:
                logits = (cos - self.spec.center) / self.spec.temperature
            return torch.sigmoid(logits.float())


def build_openclip_tagger(
    spec: OpenClipTaggerSpec,
    concepts: ConceptSet,
    threshold: float,
    cache_dir: str,
    device: str | torch.device = "cpu",
) -> OpenClipTagger:
    """An open_clip tagger whose prompt per concept is the mean of its description embeddings.

    The model is loaded once and serves both towers; the text embeddings go through the label
    embedding cache (mode ``mean``) in ``cache_dir``.
    """
    clip = load_clip(spec.text_encoder, device)
    label = cached_label_embeddings(
        concepts, "mean", spec.text_encoder, cache_dir, device=device, clip=clip
    )
    return OpenClipTagger(
        spec,
        label.concept_ids,
        label.embeddings[:, 0, :],
        threshold,
        device=device,
        model=clip[0],
        embeddings_key=label.key,
    )


def _image_input(cfg: dict) -> ImageInput:
    """The CPU-stage preprocessing equivalent to open_clip's transform for this model."""
    size = cfg["size"]
    height, width = (size, size) if isinstance(size, int) else size
    if height != width:
        raise ValueError(f"only square open_clip inputs are supported, got {height}x{width}")
    if cfg["resize_mode"] not in _RESIZE_MODES:
        raise ValueError(
            f"open_clip resize mode {cfg['resize_mode']!r} is not supported; "
            f"use one of {sorted(_RESIZE_MODES)}"
        )
    if cfg["interpolation"] not in _RESAMPLES:
        raise ValueError(
            f"open_clip interpolation {cfg['interpolation']!r} is not supported; use {_RESAMPLES}"
        )
    return ImageInput(
        size=int(height),
        resize=_RESIZE_MODES[cfg["resize_mode"]],
        resample=cfg["interpolation"],
        mean=tuple(float(m) for m in cfg["mean"]),
        std=tuple(float(s) for s in cfg["std"]),
    )


def input_for(spec: TextEncoderSpec) -> ImageInput:
    """The CPU-stage preprocessing of a model, for the driver to plan with (loads it on CPU)."""
    model, _ = load_clip(spec, "cpu")
    return _image_input(model.visual.preprocess_cfg)
