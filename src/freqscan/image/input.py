"""What a tagger asks the CPU stage to do with each image; importable without torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageInput:
    """How a tagger wants its images.

    Args:
        size: Output side in pixels (square).
        resize: ``squash`` resizes to size x size ignoring aspect (RAM++); ``shorter_side_crop``
            resizes the shorter side to ``size`` then centre-crops (CLIP).
        resample: PIL resampling filter.
        mean: Per-channel mean on the [0, 1] scale.
        std: Per-channel std on the [0, 1] scale.
    """

    size: int
    resize: Literal["squash", "shorter_side_crop"] = "squash"
    resample: Literal["bilinear", "bicubic"] = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
