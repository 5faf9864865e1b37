"""``freqscan eval correlate``: do two pretraining sets find the same concepts frequent?

The paper compares CC3M, CC12M, YFCC15M and LAION-400M with Spearman's rank correlation of the
per-concept counts (`correlations_between_pretraining_frequencies.ipynb`). Here the two count
sets are joined by concept name (the notebook paired them by position), and Pearson's r of
``log10(count)`` (zeros as 1) is reported beside Spearman's rho.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from freqscan.evaluation._io import write_csv, write_json
from freqscan.evaluation.sources import ConceptCounts, normalize_name


@dataclass(frozen=True, slots=True)
class Correlation:
    """Per-concept counts of two sources, joined, and their correlation.

    Args:
        label_a: First source, in short.
        label_b: Second source.
        concepts: Concepts in both (as the first source spells them).
        counts_a: Their counts in the first source.
        counts_b: In the second.
        only_a: Concepts only in the first source.
        only_b: Concepts only in the second.
        spearman_rho: Spearman's rho of the counts.
        spearman_p: Its p-value.
        pearson_log_r: Pearson's r of ``log10(max(count, 1))``.
        pearson_log_p: Its p-value.
    """

    label_a: str
    label_b: str
    concepts: tuple[str, ...]
    counts_a: tuple[int, ...]
    counts_b: tuple[int, ...]
    only_a: int
    only_b: int
    spearman_rho: float | None
    spearman_p: float | None
    pearson_log_r: float | None
    pearson_log_p: float | None

    @property
    def n(self) -> int:
        return len(self.concepts)

    def to_dict(self) -> dict:
        return {
            "a": self.label_a,
            "b": self.label_b,
            "concepts_joined": self.n,
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
            "zero_in_both": sum(
                1 for a, b in zip(self.counts_a, self.counts_b, strict=True) if a == b == 0
            ),
            "spearman_rho": self.spearman_rho,
            "spearman_p": self.spearman_p,
            "pearson_log10_r": self.pearson_log_r,
            "pearson_log10_p": self.pearson_log_p,
        }


def correlate(a: ConceptCounts, b: ConceptCounts) -> Correlation:
    """Join ``a`` and ``b`` by concept name (case- and separator-insensitively) and correlate."""
    index_b: dict[str, str] = {}
    for concept in b.counts:
        index_b.setdefault(normalize_name(concept), concept)
    # Exact names first, then the rest by normalised name; each concept of b is used once.
    pairs = {c: c for c in a.counts if c in b.counts}
    used = set(pairs.values())
    for concept in sorted(c for c in a.counts if c not in pairs):
        other = index_b.get(normalize_name(concept))
        if other is not None and other not in used:
            pairs[concept] = other
            used.add(other)
    concepts = sorted(pairs)
    ca = [int(a.counts[c]) for c in concepts]
    cb = [int(b.counts[pairs[c]]) for c in concepts]
    sr = sp = pr = pp = None
    x, y = np.array(ca, dtype=float), np.array(cb, dtype=float)
    if len(concepts) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        s = stats.spearmanr(x, y)
        sr, sp = float(s.statistic), float(s.pvalue)
        lx, ly = np.log10(np.maximum(x, 1)), np.log10(np.maximum(y, 1))
        if np.ptp(lx) > 0 and np.ptp(ly) > 0:
            p = stats.pearsonr(lx, ly)
            pr, pp = float(p.statistic), float(p.pvalue)
    return Correlation(
        label_a=a.label,
        label_b=b.label,
        concepts=tuple(concepts),
        counts_a=tuple(ca),
        counts_b=tuple(cb),
        only_a=len(a.counts) - len(concepts),
        only_b=len(b.counts) - len(concepts),
        spearman_rho=sr,
        spearman_p=sp,
        pearson_log_r=pr,
        pearson_log_p=pp,
    )


def write_outputs(corr: Correlation, a: ConceptCounts, b: ConceptCounts, out: str | Path) -> dict:
    """Write ``correlate.csv`` (joined counts), ``correlate.json`` and ``correlate.png``."""
    from freqscan.evaluation import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sources = [
        {
            "source": c.source,
            "column": c.column,
            "run_id": (c.run or {}).get("run_id"),
            "notes": list(c.notes),
        }
        for c in (a, b)
    ]
    return {
        "table": write_csv(
            out / "correlate.csv",
            ("concept", "count_a", "count_b"),
            zip(corr.concepts, corr.counts_a, corr.counts_b, strict=True),
        ),
        "json": write_json(out / "correlate.json", {**corr.to_dict(), "sources": sources}),
        "plot": plots.save(plots.correlate_figure(corr), out / "correlate.png"),
    }
