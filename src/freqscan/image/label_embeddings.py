"""Open-set label embeddings: every concept's descriptions through the CLIP text encoder.

Two layouts (see ``notes/rampp-spec.md`` §2):

- ``reweight`` (upstream RAM++): every description is kept, (K, D, C) with D the most
  descriptions of any concept. Concepts with fewer are zero-padded and masked, where upstream
  requires equal counts and silently misaligns otherwise.
- ``mean`` (the paper's bethgelab variant): each concept's normalised description embeddings are
  averaged and renormalised, (K, 1, C), a plain prompt ensemble.

Embeddings are cached on disk under a content key: the paper's 4,029 concepts x 51 descriptions
are about 200,000 encoder passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from freqscan.concepts import ConceptSet
from freqscan.image.text_encoder import TextEncoderSpec, encode_texts, load_clip

DescriptionMode = Literal["reweight", "mean"]
DEFAULT_PROMPT = "a photo of a {name}."
"""Used for a concept without descriptions; it is also the first of upstream's 51 per tag."""

# Bump when the layout or the encoding changes, so that older cache files are not reused.
_FORMAT = "freqscan-label-embeddings-v1"

Clip = tuple[torch.nn.Module, Callable[[Sequence[str]], torch.Tensor]]


@dataclass(frozen=True)
class LabelEmbeddings:
    """Per-concept description embeddings.

    Args:
        embeddings: float32 (K, D, C); row d of concept k is the L2-normalised embedding of its
            d-th description (``reweight``) or the renormalised mean (``mean``, D = 1); padded
            rows are zero.
        mask: bool (K, D), True where the row is a real description.
        concept_ids: int64 (K,), in concept-set order.
        mode: The ``DescriptionMode`` that built them.
        key: ``embedding_key`` of the inputs.
    """

    embeddings: np.ndarray
    mask: np.ndarray
    concept_ids: np.ndarray
    mode: str
    key: str

    def __post_init__(self) -> None:
        emb, mask, ids = self.embeddings, self.mask, self.concept_ids
        if emb.dtype != np.float32 or emb.ndim != 3:
            raise ValueError(f"embeddings must be float32 (K, D, C), got {emb.dtype} {emb.shape}")
        if mask.dtype != np.bool_ or mask.shape != emb.shape[:2]:
            raise ValueError(f"mask must be bool {emb.shape[:2]}, got {mask.dtype} {mask.shape}")
        if ids.dtype != np.int64 or ids.shape != emb.shape[:1]:
            raise ValueError(
                f"concept_ids must be int64 {emb.shape[:1]}, got {ids.dtype} {ids.shape}"
            )
        _check_mode(self.mode)
        if not mask.any(axis=1).all():
            raise ValueError("every concept needs at least one description row")
        if self.mode == "mean" and emb.shape[1] != 1:
            raise ValueError(f"mean mode has one row per concept, got D = {emb.shape[1]}")
        if np.any(emb[~mask]):
            raise ValueError("padded (masked-out) rows must be zero")

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` (to an open file or a path; a path gets no suffix added)."""
        with open(path, "wb") as fh:
            np.savez(
                fh,
                embeddings=self.embeddings,
                mask=self.mask,
                concept_ids=self.concept_ids,
                mode=np.array(self.mode),
                key=np.array(self.key),
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelEmbeddings:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                embeddings=data["embeddings"],
                mask=data["mask"],
                concept_ids=data["concept_ids"],
                mode=str(data["mode"]),
                key=str(data["key"]),
            )


def concept_descriptions(concepts: ConceptSet) -> list[list[str]]:
    """Each concept's descriptions, verbatim; ``DEFAULT_PROMPT`` for a concept without any."""
    return [list(c.descriptions) or [DEFAULT_PROMPT.format(name=c.name)] for c in concepts]


def embedding_key(concepts: ConceptSet, mode: DescriptionMode, spec: TextEncoderSpec) -> str:
    """sha256 over the format, mode, encoder identity and each concept's name and descriptions.

    Order matters (it is the row order), so this is not ``ConceptSet.content_hash``.
    """
    _check_mode(mode)
    names = [c.name for c in concepts]
    payload = [_FORMAT, mode, spec.identity(), names, concept_descriptions(concepts)]
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def build_label_embeddings(
    concepts: ConceptSet,
    mode: DescriptionMode,
    spec: TextEncoderSpec,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    clip: Clip | None = None,
) -> LabelEmbeddings:
    """Encode every concept's descriptions.

    Args:
        concepts: The concepts; rows follow their order.
        mode: ``reweight`` keeps every description, ``mean`` averages them per concept.
        spec: The text encoder.
        device: Where to run the encoder (ignored when ``clip`` is given).
        batch_size: Descriptions per encoder call.
        progress: Called with (descriptions done, total unique descriptions) after each batch.
        clip: ``load_clip(spec)`` already loaded by the caller (the open_clip tagger shares it).
    """
    key = embedding_key(concepts, mode, spec)
    per_concept = concept_descriptions(concepts)
    # Each distinct string is encoded once, however many concepts share it.
    unique = list(dict.fromkeys(d for descs in per_concept for d in descs))
    model, tokenizer = clip if clip is not None else load_clip(spec, device)
    encoded = encode_texts(model, tokenizer, unique, batch_size, progress)
    row_of = {text: i for i, text in enumerate(unique)}

    k, c = len(per_concept), encoded.shape[1]
    if mode == "mean":
        embeddings = np.empty((k, 1, c), dtype=np.float32)
        for i, descs in enumerate(per_concept):
            mean = encoded[[row_of[d] for d in descs]].astype(np.float64).mean(axis=0)
            embeddings[i, 0] = mean / np.linalg.norm(mean)
        mask = np.ones((k, 1), dtype=bool)
    else:
        depth = max(len(descs) for descs in per_concept)
        embeddings = np.zeros((k, depth, c), dtype=np.float32)
        mask = np.zeros((k, depth), dtype=bool)
        for i, descs in enumerate(per_concept):
            embeddings[i, : len(descs)] = encoded[[row_of[d] for d in descs]]
            mask[i, : len(descs)] = True
    ids = np.array([concept.id for concept in concepts], dtype=np.int64)
    return LabelEmbeddings(embeddings, mask, ids, mode, key)


def cached_label_embeddings(
    concepts: ConceptSet,
    mode: DescriptionMode,
    spec: TextEncoderSpec,
    cache_dir: str,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    clip: Clip | None = None,
) -> LabelEmbeddings:
    """``build_label_embeddings``, cached as ``<cache_dir>/label-embeddings-<key>.npz``.

    The file is written to a temporary name and renamed, so concurrent builders never leave a
    partial file behind (the last rename wins). ``cache_dir`` is a local directory, created if
    missing.
    """
    key = embedding_key(concepts, mode, spec)
    path = Path(cache_dir) / f"label-embeddings-{key}.npz"
    if path.exists():
        cached = LabelEmbeddings.load(path)
        expected_ids = np.array([c.id for c in concepts], dtype=np.int64)
        if cached.key != key or not np.array_equal(cached.concept_ids, expected_ids):
            raise ValueError(f"{path}: cache file does not hold these embeddings; delete it")
        return cached
    built = build_label_embeddings(concepts, mode, spec, device, batch_size, progress, clip)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name in the same directory, so the rename is atomic; opened normally (unlike
    # mkstemp's 0600) so that a shared cache stays readable under the user's umask.
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        built.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return built


def _check_mode(mode: str) -> None:
    if mode not in get_args(DescriptionMode):
        raise ValueError(
            f"description mode must be one of {get_args(DescriptionMode)}, got {mode!r}"
        )
