"""Decode and resize one image on a CPU worker: bytes -> uint8 (S, S, 3), or the reason it failed.

Only decoding and resizing happen here; normalisation runs on the tagger's device
(:func:`freqscan.image.tagger.normalize`), so what crosses the object store is 1 byte per value.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from freqscan.image.input import ImageInput
from freqscan.records import IMAGE_TOO_LARGE, IMAGE_TRUNCATED, IMAGE_UNDECODABLE

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def decode_image(data: bytes, spec: ImageInput) -> tuple[np.ndarray | None, str | None]:
    """Decode ``data`` and resize it as ``spec`` asks.

    Returns:
        ``(pixels, None)`` with uint8 (size, size, 3) RGB pixels, or ``(None, reason)`` with one
        of ``undecodable_image``, ``truncated_image`` or ``image_too_large``.
    """
    try:
        with warnings.catch_warnings():
            # PIL warns before it raises for a bomb; the raise is what is handled.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                # JPEG decodes at 1/2, 1/4 or 1/8 scale when the image is that much larger than
                # the target: the same pixels a resize would average, several times faster.
                img.draft("RGB", _draft_size(img.size, spec))
                rgb = img.convert("RGB")
                return np.asarray(_resize(rgb, spec), dtype=np.uint8), None
    except Image.DecompressionBombError:
        return None, IMAGE_TOO_LARGE
    except UnidentifiedImageError:
        return None, IMAGE_UNDECODABLE
    except OSError as exc:
        return None, IMAGE_TRUNCATED if "truncated" in str(exc) else IMAGE_UNDECODABLE
    except (ValueError, SyntaxError, EOFError):  # what PIL's plugins raise on corrupt headers
        return None, IMAGE_UNDECODABLE


def _draft_size(size: tuple[int, int], spec: ImageInput) -> tuple[int, int]:
    if spec.resize == "squash":
        return spec.size, spec.size
    # shorter side to spec.size: the draft must keep the shorter side at least that long.
    scale = spec.size / min(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _resize(img: Image.Image, spec: ImageInput) -> Image.Image:
    resample = _RESAMPLE[spec.resample]
    if spec.resize == "squash":
        return img.resize((spec.size, spec.size), resample)
    # torchvision's Resize(int) + CenterCrop, as open_clip applies them: the shorter side becomes
    # exactly `size`, the longer one is truncated, the crop offset is rounded.
    w, h = img.size
    if w <= h:
        w2, h2 = spec.size, int(spec.size * h / w)
    else:
        w2, h2 = int(spec.size * w / h), spec.size
    img = img.resize((w2, h2), resample)
    left = int(round((w2 - spec.size) / 2.0))
    top = int(round((h2 - spec.size) / 2.0))
    return img.crop((left, top, left + spec.size, top + spec.size))
