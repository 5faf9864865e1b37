"""The numbers behind the log-linear analysis: the paper's binned Pearson rho and a robust fit.

Both take per-concept counts and a per-concept metric (zero-shot accuracy in percent, say) and
know nothing about where they came from.

The paper's procedure (Udandarao et al. 2024, Fig. 2; `zero_shot_integrated_search_results.ipynb`
in bethgelab/frequency_determines_performance), written out:

1. counts of 0 become 1; ``x = ln(count)``;
2. ``edges = numpy.linspace(min(x), max(x), num=12)``;
3. ``bin = numpy.digitize(x, edges, right=True)``, so bin ``k`` holds ``edges[k-1] < x <= edges[k]``
   and bin 0 holds only the points at the minimum;
4. the metric is averaged per bin;
5. rho is Pearson's r between ``ln(exp(edges[k])) = edges[k]`` (the notebooks store
   ``exp(edges)`` for the log-axis plot and take its log back) and the mean of bin ``k``, over
   bins 1..10: the first (the minimum, usually the concepts never found) and the last are left
   out.

Because the edges are equally spaced, ``edges[k]`` is an affine function of ``k``; Pearson's r is
invariant under affine maps, so rho would be the same with bin centres, left edges or bin numbers.
The notebooks would fail (or misalign bins) when a bin is empty; here an empty bin is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

# numpy.linspace(min, max, num=12) in the paper's notebooks: 12 edges, bins 0..11.
PAPER_BIN_EDGES = 12
# Bins 1..10 enter rho; bin 0 (the minimum) and bin 11 (the top) are left out.
PAPER_FIRST_BIN = 1
PAPER_LAST_BIN = PAPER_BIN_EDGES - 2
# Fewer bins than this give no meaningful correlation (and scipy warns at 2).
MIN_BINS_FOR_RHO = 3
# Exact Theil-Sen keeps every pairwise slope; above this many pairs (~ 7,000 points, 200 MB of
# float64) a fixed-seed random sample of pairs is used instead.
MAX_THEIL_SEN_PAIRS = 25_000_000


def _as_arrays(counts, metrics) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(counts, dtype=np.float64)
    m = np.asarray(metrics, dtype=np.float64)
    if c.shape != m.shape or c.ndim != 1:
        raise ValueError(f"counts and metrics must be 1-D of one length, got {c.shape}, {m.shape}")
    if c.size and (np.any(c < 0) or not np.all(np.isfinite(c))):
        raise ValueError("counts must be finite and >= 0")
    if not np.all(np.isfinite(m)):
        raise ValueError("metrics must be finite")
    return c, m


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass(frozen=True, slots=True)
class BinnedFit:
    """The paper's binned log-linear correlation.

    Args:
        edges: ``ln(count)`` bin edges (``n_edges`` of them; bin ``k`` ends at ``edges[k]``).
        bin_means: Mean metric per bin, ``None`` where a bin is empty.
        bin_stds: Population standard deviation per bin (as ``numpy.std``), ``None`` if empty.
        bin_counts: Points per bin.
        used_bins: The bins that entered rho (within first..last bin, non-empty).
        rho: Pearson's r between ``edges[k]`` and ``bin_means[k]`` over ``used_bins``.
        p_value: Two-sided p-value of rho.
        n_points: Points binned.
    """

    edges: tuple[float, ...]
    bin_means: tuple[float | None, ...]
    bin_stds: tuple[float | None, ...]
    bin_counts: tuple[int, ...]
    used_bins: tuple[int, ...]
    rho: float | None
    p_value: float | None
    n_points: int

    @property
    def count_edges(self) -> tuple[float, ...]:
        """The edges as counts (``exp(edges)``), where the paper's plot puts each bin."""
        return tuple(math.exp(e) for e in self.edges)

    def to_dict(self) -> dict:
        return {
            "rho": self.rho,
            "p_value": self.p_value,
            "n_points": self.n_points,
            "used_bins": list(self.used_bins),
            "ln_edges": list(self.edges),
            "count_edges": list(self.count_edges),
            "bin_means": list(self.bin_means),
            "bin_stds": list(self.bin_stds),
            "bin_counts": list(self.bin_counts),
        }


def paper_loglinear(
    counts,
    metrics,
    n_edges: int = PAPER_BIN_EDGES,
    first_bin: int = PAPER_FIRST_BIN,
    last_bin: int | None = None,
) -> BinnedFit:
    """Bin ``ln(count)`` the paper's way and correlate bin edge with mean metric.

    Args:
        counts: Per-concept counts (>= 0; zeros become 1).
        metrics: Per-concept metric, same order.
        n_edges: ``num`` of ``numpy.linspace`` (the paper: 12).
        first_bin: First bin that enters rho (the paper: 1).
        last_bin: Last bin that enters rho (the paper: ``n_edges - 2``, i.e. 10).
    """
    c, m = _as_arrays(counts, metrics)
    if n_edges < 2:
        raise ValueError("n_edges must be at least 2")
    last = n_edges - 2 if last_bin is None else last_bin
    if c.size == 0:
        empty: tuple = (None,) * n_edges
        return BinnedFit((math.nan,) * n_edges, empty, empty, (0,) * n_edges, (), None, None, 0)
    x = np.log(np.where(c > 0, c, 1.0))
    edges = np.linspace(x.min(), x.max(), num=n_edges)
    assigned = np.digitize(x, edges, right=True)
    means: list[float | None] = []
    stds: list[float | None] = []
    sizes: list[int] = []
    for k in range(n_edges):
        members = m[assigned == k]
        sizes.append(int(members.size))
        means.append(float(members.mean()) if members.size else None)
        stds.append(float(members.std()) if members.size else None)
    used = tuple(k for k in range(first_bin, last + 1) if 0 <= k < n_edges and sizes[k] > 0)
    rho = p = None
    if len(used) >= MIN_BINS_FOR_RHO and x.max() > x.min():
        ex = np.array([edges[k] for k in used])
        ey = np.array([means[k] for k in used], dtype=np.float64)
        if np.ptp(ey) > 0:
            result = stats.pearsonr(ex, ey)
            rho, p = _none_if_nan(result.statistic), _none_if_nan(result.pvalue)
    return BinnedFit(
        edges=tuple(float(e) for e in edges),
        bin_means=tuple(means),
        bin_stds=tuple(stds),
        bin_counts=tuple(sizes),
        used_bins=used,
        rho=rho,
        p_value=p,
        n_points=int(c.size),
    )


@dataclass(frozen=True, slots=True)
class RobustFit:
    """A robust fit on the raw points: metric against log10 of the count.

    Args:
        slope_per_decade: Theil-Sen slope: metric change per 10x more occurrences.
        ci_low: Lower end of the slope's confidence interval (Sen 1968, as in
            ``scipy.stats.theilslopes``).
        ci_high: Upper end.
        intercept: ``median(y) - slope * median(x)``: the metric at one occurrence.
        confidence: Confidence level of the interval.
        spearman_rho: Spearman's rank correlation of count and metric.
        spearman_p: Its two-sided p-value.
        n_points: Points fitted.
        pairs: Pairwise slopes the median was taken over.
        sampled: Whether the pairs were a random sample (more than
            :data:`MAX_THEIL_SEN_PAIRS` pairs).
    """

    slope_per_decade: float | None
    ci_low: float | None
    ci_high: float | None
    intercept: float | None
    confidence: float
    spearman_rho: float | None
    spearman_p: float | None
    n_points: int
    pairs: int
    sampled: bool

    def to_dict(self) -> dict:
        return {
            "slope_per_decade": self.slope_per_decade,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "intercept": self.intercept,
            "confidence": self.confidence,
            "spearman_rho": self.spearman_rho,
            "spearman_p": self.spearman_p,
            "n_points": self.n_points,
            "pairs": self.pairs,
            "sampled": self.sampled,
        }


def _repeat_counts(values: np.ndarray) -> np.ndarray:
    _, counts = np.unique(values, return_counts=True)
    return counts[counts > 1].astype(np.float64)


def _pairwise_slopes(x: np.ndarray, y: np.ndarray, max_pairs: int, seed: int):
    n = x.size
    total = n * (n - 1) // 2
    if total <= max_pairs:
        # Row by row, so memory holds the slopes once (not three n x n matrices).
        chunks = []
        for i in range(n - 1):
            dx = x[i + 1 :] - x[i]
            keep = dx != 0
            if keep.any():
                chunks.append((y[i + 1 :][keep] - y[i]) / dx[keep])
        slopes = np.concatenate(chunks) if chunks else np.empty(0)
        return slopes, slopes.size, False
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=max_pairs)
    j = rng.integers(0, n, size=max_pairs)
    dx = x[j] - x[i]
    keep = (i != j) & (dx != 0)
    slopes = (y[j][keep] - y[i][keep]) / dx[keep]
    # Pairs with a slope in the whole set, estimated from the sample's share of them.
    distinct = max(int(np.count_nonzero(i != j)), 1)
    return slopes, round(total * slopes.size / distinct), True


def robust_fit(
    counts,
    metrics,
    confidence: float = 0.95,
    max_pairs: int = MAX_THEIL_SEN_PAIRS,
    seed: int = 0,
) -> RobustFit:
    """Theil-Sen slope of metric on ``log10(count)`` (zeros become 1) and Spearman's rho.

    Matches ``scipy.stats.theilslopes(y, x, alpha=confidence)`` (slope, interval, ``separate``
    intercept) without its three ``n x n`` matrices.

    Args:
        counts: Per-concept counts (>= 0).
        metrics: Per-concept metric, same order.
        confidence: Confidence level of the slope's interval.
        max_pairs: Above this many pairs, sample this many at random (``seed``).
        seed: Seed of that sample.
    """
    c, m = _as_arrays(counts, metrics)
    n = int(c.size)
    spearman_rho = spearman_p = None
    if n >= MIN_BINS_FOR_RHO and np.ptp(c) > 0 and np.ptp(m) > 0:
        result = stats.spearmanr(c, m)
        spearman_rho, spearman_p = (
            _none_if_nan(result.statistic),
            _none_if_nan(result.pvalue),
        )
    x = np.log10(np.where(c > 0, c, 1.0))
    if n < 2 or np.ptp(x) == 0:
        return RobustFit(None, None, None, None, confidence, spearman_rho, spearman_p, n, 0, False)
    slopes, population, sampled = _pairwise_slopes(x, m, max_pairs, seed)
    if not slopes.size:
        return RobustFit(None, None, None, None, confidence, spearman_rho, spearman_p, n, 0, False)
    # Sen (1968), eq. 2.6, with ties in x and y; the same ranks as scipy.stats.theilslopes.
    alpha = 1.0 - confidence if confidence > 0.5 else confidence
    z = stats.norm.ppf(alpha / 2.0)
    tx, ty = _repeat_counts(x), _repeat_counts(m)
    sigsq = (
        n * (n - 1) * (2 * n + 5)
        - np.sum(tx * (tx - 1) * (2 * tx + 5))
        - np.sum(ty * (ty - 1) * (2 * ty + 5))
    ) / 18.0
    ranks: tuple[int, int] | None = None
    if sigsq > 0:
        sigma = math.sqrt(sigsq)
        upper = (population - z * sigma) / 2.0
        lower = (population + z * sigma) / 2.0
        if sampled:  # the same quantiles of the sampled slopes
            upper, lower = upper * slopes.size / population, lower * slopes.size / population
        ru = min(int(np.round(upper)), slopes.size - 1)
        rl = max(int(np.round(lower)) - 1, 0)
        ranks = (rl, ru) if rl <= ru else None
    # One partial sort for the median and both ends of the interval.
    mid = ((slopes.size - 1) // 2, slopes.size // 2)
    slopes.partition(sorted({*mid, *(ranks or ())}))
    median_slope = float((slopes[mid[0]] + slopes[mid[1]]) / 2.0)
    low, high = (float(slopes[ranks[0]]), float(slopes[ranks[1]])) if ranks else (None, None)
    intercept = float(np.median(m) - median_slope * np.median(x))
    return RobustFit(
        slope_per_decade=median_slope,
        ci_low=low,
        ci_high=high,
        intercept=intercept,
        confidence=confidence,
        spearman_rho=spearman_rho,
        spearman_p=spearman_p,
        n_points=n,
        pairs=int(slopes.size),
        sampled=sampled,
    )
