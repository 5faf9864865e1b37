"""The vectorised tally equals the per-sample definition, exactly, on random shards.

Scores are stored float32 and compared as float64 against the thresholds, so the random scores
sit exactly at, one float32 step below and one above every threshold and grid value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from freqscan.config import THRESHOLD_GRID
from freqscan.counting.reduce import tally_columns
from freqscan.counting.tally import Thresholds, tally

IDS = pa.list_(pa.int64())
SCORES = pa.list_(pa.float32())


def edge_scores(values: list[float]) -> np.ndarray:
    """Each value as float32, and the float32 just below and just above it."""
    at = np.array(values, dtype=np.float32)
    return np.concatenate([at, np.nextafter(at, np.float32(0)), np.nextafter(at, np.float32(1))])


def random_thresholds(rng: np.random.Generator, pool: np.ndarray) -> Thresholds | None:
    if rng.integers(5) == 0:
        return None
    floor = float(rng.choice([0.45, 0.5, 0.62]))
    per = {int(c): float(rng.choice([floor, 0.66, 0.7, 0.9])) for c in pool if rng.integers(3) == 0}
    return Thresholds(float(rng.choice([0.7, 0.75, floor])), floor, per, THRESHOLD_GRID)


def random_shard(
    rng: np.random.Generator, pool: np.ndarray, samples: int, thresholds: Thresholds | None
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Text ids, image ids and scores of random samples, ids from a small shared pool."""
    edges = [*THRESHOLD_GRID, 0.45, 0.62, 0.66]
    if thresholds is not None:
        edges += [thresholds.default, *thresholds.per_concept.values()]
    candidates = np.concatenate([edge_scores(edges), rng.random(8).astype(np.float32)])
    text, image, scores = [], [], []
    for _ in range(samples):
        kind = rng.integers(6)  # 0: no caption hit list, 1: no image, 2: image with no score
        text.append(None if kind == 0 else rng.choice(pool, rng.integers(0, 4)).tolist())
        if kind == 1:
            image.append(None)
            scores.append(None)
            continue
        # Repeats allowed: a sample counts a concept once, at its best score.
        n = 0 if kind == 2 else int(rng.integers(0, 6))
        image.append(rng.choice(pool, n).tolist())
        scores.append(rng.choice(candidates, n).tolist())
    return pa.array(text, IDS), pa.array(image, IDS), pa.array(scores, SCORES)


@pytest.mark.parametrize("seed", range(300))
def test_tally_columns_equals_the_per_sample_tally(seed):
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2**63 - 1, int(rng.integers(1, 12)))
    thresholds = random_thresholds(rng, pool)
    columns = random_shard(rng, pool, int(rng.integers(0, 60)), thresholds)
    if rng.integers(2):  # sliced and chunked, as the assembler and rethreshold hand them over
        columns = tuple(pa.chunked_array([c.slice(0, 3), c.slice(3)]) for c in columns)
    text, image, scores = columns
    expected = tally(text.to_pylist(), image.to_pylist(), scores.to_pylist(), thresholds)
    assert tally_columns(text, image, scores, thresholds) == expected


def test_image_ids_and_scores_of_different_lengths_are_refused():
    text = pa.array([[1]], IDS)
    with pytest.raises(ValueError, match="differ in length"):
        tally_columns(
            text, pa.array([[1, 2]], IDS), pa.array([[0.9]], SCORES), Thresholds(0.7, 0.5)
        )
