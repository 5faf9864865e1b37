"""The shard tally of :mod:`freqscan.counting.tally`, computed over Arrow columns at once.

:func:`~freqscan.counting.tally.tally` loops per sample and per score: it is the readable
definition. :func:`tally_columns` gives the identical :class:`ShardTally` with numpy over whole
columns (``tests/test_counting_reduce.py`` checks equality on random inputs), so the driver,
rethreshold and later the workers reduce millions of samples per second.

How: every concept id of the shard gets a dense code (Arrow's hash-based dictionary encoding),
and a (sample, concept) pair becomes one int64 key ``sample * codes + code``. Pairs are made
unique (a sample counts a concept once); an image pair keeps its highest score, since a concept
counts at t when any of its scores is above t. Each text pair looks up its image pair's score,
so integrated counts and misalignment follow from the same comparisons. Counts are bincounts of
codes; the grid counts come from one histogram of how many grid values each score exceeds.
Scores are compared as float64 against the thresholds, as :func:`tally` compares them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freqscan.counting.tally import ShardTally, Thresholds

ListColumn = pa.Array | pa.ChunkedArray


def tally_columns(
    text_ids: ListColumn,
    image_ids: ListColumn,
    image_scores: ListColumn,
    thresholds: Thresholds | None,
) -> ShardTally:
    """Count one shard's samples: :func:`~freqscan.counting.tally.tally` on Arrow list columns.

    Args:
        text_ids: ``list<int64>``, per sample the concepts its caption counts for.
        image_ids: ``list<int64>``, per sample the concepts its image scored at or above the
            floor (null or empty without a usable image); ignored when ``thresholds`` is None.
        image_scores: ``list<float32>``, the matching stored scores.
        thresholds: The run's thresholds; ``None`` when the run tags no images.

    Raises:
        ValueError: A sample's image ids and scores differ in length.
    """
    samples = len(text_ids)
    text_parent, text_values = _flatten(text_ids)
    if thresholds is None:
        image_parent, image_values = text_parent[:0], text_values.slice(0, 0)
        scores = np.empty(0)
    else:
        image_parent, image_values = _flatten(image_ids)
        score_parent, score_values = _flatten(image_scores)
        if not np.array_equal(image_parent, score_parent):
            raise ValueError("a sample's image concept ids and scores differ in length")
        scores = score_values.to_numpy(zero_copy_only=False).astype(np.float64)
        scores[np.isnan(scores)] = -np.inf  # NaN > t is false, as it is in tally()

    encoded = pc.dictionary_encode(pa.concat_arrays([text_values, image_values]))
    vocab = encoded.dictionary.to_numpy(zero_copy_only=False)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    width = len(vocab)
    text_keys = np.unique(text_parent * width + codes[: len(text_values)])
    text_codes = text_keys % width
    out = ShardTally(text=_counter(vocab, np.bincount(text_codes, minlength=width)))
    if thresholds is None:
        return out

    pair_keys, pair_scores = _best_scores(image_parent * width + codes[len(text_values) :], scores)
    pair_codes = pair_keys % width
    # The score of each text pair's concept in the same sample's image (-inf: not tagged).
    at = np.searchsorted(pair_keys, text_keys)
    found = at < len(pair_keys)
    found[found] = pair_keys[at[found]] == text_keys[found]
    text_scores = np.full(len(text_keys), -np.inf)
    text_scores[found] = pair_scores[at[found]]

    of_code = np.array([thresholds.of(c) for c in vocab.tolist()], dtype=np.float64)
    shown = pair_scores > of_code[pair_codes]
    both = text_scores > of_code[text_codes]
    out.image = _counter(vocab, np.bincount(pair_codes[shown], minlength=width))
    out.integrated = _counter(vocab, np.bincount(text_codes[both], minlength=width))

    has_text = _flags(text_keys // width, samples)
    has_shown = _flags(pair_keys[shown] // width, samples)
    out.text_and_image = int(np.count_nonzero(has_text & has_shown))
    # Samples with an integrated pair are a subset of those with text and a shown image.
    aligned = _flags(text_keys[both] // width, samples)
    out.misaligned = out.text_and_image - int(np.count_nonzero(aligned))

    grid = thresholds.known_grid
    out.image_grid = _grid_counts(vocab, pair_codes, pair_scores, grid)
    out.integrated_grid = _grid_counts(vocab, text_codes, text_scores, grid)
    return out


def _flatten(column: ListColumn) -> tuple[np.ndarray, pa.Array]:
    """Each list value's sample index, and the values (null lists hold none)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False).astype(np.int64)
    return parents, pc.list_flatten(array)


def _best_scores(keys: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (sample, concept) keys, sorted, each with its highest score."""
    # Stable sort: rows arrive sample by sample, so the keys are already in sorted runs.
    order = np.argsort(keys, kind="stable")
    keys, scores = keys[order], scores[order]
    if not len(keys):
        return keys, scores
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return keys[starts], np.maximum.reduceat(scores, starts)


def _grid_counts(
    vocab: np.ndarray, codes: np.ndarray, scores: np.ndarray, grid: Sequence[float]
) -> dict[float, Counter[int]]:
    """Per grid value t, the codes whose score is strictly above t, counted."""
    ordered = np.array(sorted(grid), dtype=np.float64)
    # side="left": how many grid values are strictly below each score.
    passed = np.searchsorted(ordered, scores, side="left")
    levels = len(ordered) + 1
    hist = np.bincount(codes * levels + passed, minlength=len(vocab) * levels)
    # above[:, j]: codes whose score passed more than j grid values, i.e. is above ordered[j].
    above = np.cumsum(hist.reshape(len(vocab), levels)[:, ::-1], axis=1)[:, ::-1][:, 1:]
    rank = {t: j for j, t in enumerate(ordered.tolist())}
    return {t: _counter(vocab, above[:, rank[t]]) for t in grid}


def _flags(indices: np.ndarray, samples: int) -> np.ndarray:
    flags = np.zeros(samples, dtype=bool)
    flags[indices] = True
    return flags


def _counter(vocab: np.ndarray, counts: np.ndarray) -> Counter[int]:
    """Concept id -> count, nonzero counts only (as a tally's Counter holds them)."""
    nonzero = np.flatnonzero(counts)
    return Counter(dict(zip(vocab[nonzero].tolist(), counts[nonzero].tolist(), strict=True)))
