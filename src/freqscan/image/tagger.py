"""The interface every image tagger implements, and the preprocessing it asks the CPU stage for.

The CPU stage only decodes and resizes (uint8, HWC); normalisation runs on the tagger's device so
that the bytes crossing the object store stay small.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from freqscan.image.input import IMAGENET_MEAN, IMAGENET_STD, ImageInput

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageInput", "Tagger", "normalize"]


def normalize(
    images: torch.Tensor, spec: ImageInput, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 (B, H, W, 3) on any device -> normalised (B, 3, H, W) float of ``dtype``."""
    x = images.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


class Tagger(Protocol):
    """Scores images against K concepts; column k of the scores belongs to ``concept_ids[k]``.

    Attributes:
        name: Tagger name as selected with ``--tagger`` (``rampp``, ``rampp-closed``, ``openclip``).
        input: The preprocessing the CPU stage must apply.
        concept_ids: int64 (K,), the concept id of each score column.
        thresholds: float64 (K,), the default decision threshold of each column (a tag shows when
            its probability is strictly greater).
        provenance: What produced the scores (checkpoint hash, description mode, ...), recorded
            with every output.
    """

    name: str
    input: ImageInput
    concept_ids: np.ndarray
    thresholds: np.ndarray
    provenance: dict[str, str]

    def to(self, device: torch.device | str) -> Tagger: ...

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S, 3) on the tagger's device -> float32 (B, K) probabilities in [0, 1]."""
        ...
