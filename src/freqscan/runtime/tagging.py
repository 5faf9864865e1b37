"""The Ray Data adapter of the tagging stage: uint8 images in, scores at or above the floor out.

One actor per GPU (or one on a CPU-only machine) builds the tagger once, then takes batches of
sample rows. Rows without an image (no usable image, or a shard's outcome row) pass through with
empty image columns. Normalisation and autocast happen on the device. It exports the tagging
stage's metrics (:class:`freqscan.runtime.metrics.TagMetrics`).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from freqscan.concepts import ConceptSet
from freqscan.config import ImageConfig
from freqscan.image.factory import build_tagger, label_embeddings_for
from freqscan.image.label_embeddings import LabelEmbeddings
from freqscan.runtime.metrics import TagMetrics

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@ray.remote
def build_labels(config: ImageConfig, concepts: ConceptSet) -> LabelEmbeddings | None:
    """Label embeddings of the run's concepts, once per run, on a GPU when the task has one.

    The content-hash cache lives on the node that runs this task.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return label_embeddings_for(config, concepts, device)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision setting on a device; ``None`` runs in fp32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return _AUTOCAST.get(precision)


def scores_above_floor(
    probs: np.ndarray, concept_ids: np.ndarray, floor: float
) -> tuple[pa.Array, pa.Array]:
    """Per row, the concept ids and float32 scores at or above ``floor`` (as list arrays)."""
    probs = np.asarray(probs, dtype=np.float32)  # decide on the values that get stored
    keep = probs.astype(np.float64) >= floor
    rows, cols = np.nonzero(keep)
    offsets = np.zeros(len(probs) + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=len(probs)), out=offsets[1:])
    ids = pa.ListArray.from_arrays(offsets, pa.array(concept_ids[cols], pa.int64()))
    scores = pa.ListArray.from_arrays(offsets, pa.array(probs[rows, cols], pa.float32()))
    return ids, scores


class ImageTagWorker:
    """Callable class for ``Dataset.map_batches`` on the tagging actor pool.

    Args:
        config: Image settings.
        concepts: The run's concepts.
        labels: Label embeddings computed once on the driver (``None`` for the closed set).
        floor: Scores at or above it are kept.
        checkpoint_sha256: Recorded in the tagger's provenance.
        run_id: The run, a tag of every metric.
        dataset: The dataset's name, a tag of every metric.
    """

    def __init__(
        self,
        config: ImageConfig,
        concepts: ConceptSet,
        labels: LabelEmbeddings | None,
        floor: float,
        checkpoint_sha256: str = "",
        *,
        run_id: str = "",
        dataset: str = "",
    ) -> None:
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._tagger = build_tagger(config, concepts, labels, self._device, checkpoint_sha256)
        self._autocast = autocast_dtype(config.precision, self._device)
        self._floor = floor
        size = self._tagger.input.size
        self._shape = (size, size, 3)
        self._batch_size = config.batch_size
        self._metrics = TagMetrics(run_id, dataset)

    def __call__(self, batch: pa.Table) -> pa.Table:
        images = batch.column("image").combine_chunks()
        valid = images.is_valid().to_numpy(zero_copy_only=False)
        probs = np.zeros((batch.num_rows, len(self._tagger.concept_ids)), dtype=np.float32)
        if tagged := int(valid.sum()):
            start = time.perf_counter()
            probs[valid] = self._probabilities(_pixels(images, self._shape))
            self._metrics.batch(tagged, time.perf_counter() - start)
        ids, scores = scores_above_floor(probs, self._tagger.concept_ids, self._floor)
        # Rows without an image get null lists, not "nothing above the floor".
        null = pa.array(~valid)
        ids, scores = _nulled(ids, null), _nulled(scores, null)
        self._metrics.kept(ids)
        out = batch.drop_columns(["image", "image_concept_ids", "image_scores"])
        out = out.append_column("image_concept_ids", ids)
        return out.append_column("image_scores", scores)

    def _probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Scores of ``pixels``, through the model exactly ``batch_size`` images at a time.

        A partial batch is zero-padded. Kernels are chosen by batch shape and round differently
        in the last bits, so without this a sample's stored scores would depend on which samples
        shared its batch, and a retried or resumed shard (batched differently) could store
        other floats than an undisturbed run.
        """
        size = self._batch_size
        out = []
        for start in range(0, len(pixels), size):
            chunk = pixels[start : start + size]
            n = len(chunk)
            if n < size:
                chunk = np.concatenate([chunk, np.zeros((size - n, *self._shape), np.uint8)])
            out.append(self._forward(chunk)[:n])
        return np.concatenate(out)

    def _forward(self, pixels: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            # The Arrow buffer is read-only; the tensor is only ever read.
            warnings.simplefilter("ignore", UserWarning)
            images = torch.from_numpy(pixels)
        if self._device.type == "cuda":
            images = images.pin_memory().to(self._device, non_blocking=True)
        with (
            torch.inference_mode(),
            torch.autocast(
                self._device.type,
                dtype=self._autocast or torch.float32,
                enabled=self._autocast is not None,
            ),
        ):
            probs = self._tagger.probabilities(images)
        return probs.float().cpu().numpy()


def _pixels(images: pa.BinaryArray, shape: tuple[int, int, int]) -> np.ndarray:
    """The valid rows' pixels as one (N, S, S, 3) array, without copying.

    The reader writes null rows with zero length, so the valid rows' bytes are contiguous in
    Arrow's data buffer; a null that still spans bytes (legal Arrow) is filtered out first.
    """
    valid = images.is_valid().to_numpy(zero_copy_only=False)
    offsets = _offsets(images)
    if np.diff(offsets)[~valid].any():
        images = images.filter(pa.array(valid))
        offsets = _offsets(images)
    lengths = np.diff(offsets)[images.is_valid().to_numpy(zero_copy_only=False)]
    expected = shape[0] * shape[1] * shape[2]
    if (lengths != expected).any():
        raise ValueError(f"image rows must hold {expected} bytes (uint8 {shape}); got {lengths}")
    data = np.frombuffer(images.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(-1, *shape)


def _offsets(images: pa.BinaryArray) -> np.ndarray:
    return np.frombuffer(images.buffers()[1], np.int32)[
        images.offset : images.offset + len(images) + 1
    ]


def _nulled(values: pa.ListArray, null: pa.Array) -> pa.Array:
    return pc.if_else(null, pa.scalar(None, values.type), values)
