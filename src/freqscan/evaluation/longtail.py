"""``freqscan eval longtail``: the long tail of concept frequencies and a "Let it Wag!" selection.

The long-tail view sorts concepts by frequency (the paper's Fig. 3: most concepts are rare) and
reports the share of concepts under frequency thresholds. The selection takes the ``k`` rarest
concepts of a benchmark list (by integrated frequency, else text) that occur at least
``min_count`` times, the way the paper picked the 290 concepts of its "Let it Wag!" benchmark
(from LAION-400M counts); given the paper's list it reports the overlap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from freqscan.evaluation._io import write_csv, write_json
from freqscan.evaluation.sources import ConceptCounts, normalize_name

# Share-of-concepts thresholds: never found, and under 10, 100, ... occurrences.
DEFAULT_THRESHOLDS: tuple[int, ...] = (1, 10, 100, 1_000, 10_000)
# The paper's "Let it Wag!" benchmark has 290 concepts.
LET_IT_WAG_K = 290


@dataclass(frozen=True, slots=True)
class LongTail:
    """Concepts sorted by frequency, with summary shares.

    Args:
        label: What was counted.
        ranked: ``(concept, count)`` by count descending, then name.
        thresholds: The thresholds of ``share_below``.
        share_below: Threshold -> share of concepts with fewer occurrences.
        top_decile_mass: Share of all occurrences held by the 10% most frequent concepts.
        median: Median count.
    """

    label: str
    ranked: tuple[tuple[str, int], ...]
    thresholds: tuple[int, ...]
    share_below: dict[int, float]
    top_decile_mass: float
    median: float

    @property
    def n_concepts(self) -> int:
        return len(self.ranked)

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "concepts": self.n_concepts,
            "found": sum(1 for _, n in self.ranked if n > 0),
            "median": self.median,
            "top_decile_mass": self.top_decile_mass,
            "share_below": {str(t): s for t, s in self.share_below.items()},
        }


def long_tail(
    counts: dict[str, int], label: str = "", thresholds: Sequence[int] = DEFAULT_THRESHOLDS
) -> LongTail:
    """Sort ``counts`` and summarise how heavy the tail is."""
    ranked = tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    n = len(ranked)
    values = [c for _, c in ranked]
    share = {t: (sum(1 for v in values if v < t) / n if n else 0.0) for t in thresholds}
    total = sum(values)
    top = values[: max(1, n // 10)] if n else []
    ordered = sorted(values)
    median = 0.0
    if n:
        mid = n // 2
        median = float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
    return LongTail(
        label=label,
        ranked=ranked,
        thresholds=tuple(thresholds),
        share_below=share,
        top_decile_mass=(sum(top) / total) if total else 0.0,
        median=median,
    )


@dataclass(frozen=True, slots=True)
class Selection:
    """The ``k`` rarest eligible concepts.

    Args:
        concepts: ``(concept, count)``, rarest first (ties by name).
        k: How many were asked for.
        min_count: Concepts under this count were not eligible.
        candidates: Concepts considered (in the benchmark list and in the counts).
        not_in_counts: Benchmark names with no concept in the counts.
    """

    concepts: tuple[tuple[str, int], ...]
    k: int
    min_count: int
    candidates: int
    not_in_counts: tuple[str, ...]


def let_it_wag(
    counts: dict[str, int],
    benchmark: Iterable[str] | None = None,
    k: int = LET_IT_WAG_K,
    min_count: int = 0,
) -> Selection:
    """The ``k`` rarest concepts among ``benchmark`` (default: every concept) with at least
    ``min_count`` occurrences. Benchmark names match concepts case- and separator-insensitively."""
    index = {normalize_name(c): c for c in counts}
    missing: list[str] = []
    if benchmark is None:
        pool = list(counts)
    else:
        pool = []
        for name in benchmark:
            concept = name if name in counts else index.get(normalize_name(name))
            if concept:
                pool.append(concept)
            else:
                missing.append(name)
        pool = list(dict.fromkeys(pool))
    eligible = sorted(
        ((c, counts[c]) for c in pool if counts[c] >= min_count), key=lambda kv: (kv[1], kv[0])
    )
    return Selection(tuple(eligible[:k]), k, min_count, len(pool), tuple(missing))


@dataclass(frozen=True, slots=True)
class Comparison:
    """Overlap of a selection with a reference list (the paper's 290).

    Args:
        overlap: Concepts in both (as the selection spells them).
        only_selected: Selected, not in the reference.
        only_reference: In the reference, not selected.
        jaccard: ``|A & B| / |A | B|``.
    """

    overlap: tuple[str, ...]
    only_selected: tuple[str, ...]
    only_reference: tuple[str, ...]
    jaccard: float

    def to_dict(self) -> dict:
        return {
            "overlap": len(self.overlap),
            "only_selected": len(self.only_selected),
            "only_reference": len(self.only_reference),
            "jaccard": self.jaccard,
            "overlap_concepts": list(self.overlap),
            "only_selected_concepts": list(self.only_selected),
            "only_reference_concepts": list(self.only_reference),
        }


def compare(selected: Iterable[str], reference: Iterable[str]) -> Comparison:
    """Case- and separator-insensitive overlap of two concept lists."""
    sel = {normalize_name(c): c for c in selected}
    ref = {normalize_name(c): c for c in reference}
    both = sorted(sel.keys() & ref.keys())
    union = sel.keys() | ref.keys()
    return Comparison(
        overlap=tuple(sel[k] for k in both),
        only_selected=tuple(sel[k] for k in sorted(sel.keys() - ref.keys())),
        only_reference=tuple(ref[k] for k in sorted(ref.keys() - sel.keys())),
        jaccard=len(both) / len(union) if union else 0.0,
    )


def benchmark_from_datasets(counts: ConceptCounts, datasets: Sequence[str]) -> list[str]:
    """Concepts that belong to any of the downstream ``datasets``."""
    wanted = set(datasets)
    return [c for c, ds in counts.concept_datasets.items() if wanted & set(ds)]


def write_outputs(
    tail: LongTail,
    selection: Selection,
    comparison: Comparison | None,
    counts: ConceptCounts,
    out: str | Path,
) -> dict:
    """Write ``longtail.csv``, ``longtail.json``, ``let_it_wag.txt`` and ``longtail.png``."""
    from freqscan.evaluation import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    top = tail.ranked[0][1] if tail.ranked and tail.ranked[0][1] > 0 else 1
    paths = {
        "table": write_csv(
            out / "longtail.csv",
            ("rank", "concept", "count", "normalized"),
            ((i + 1, c, n, n / top) for i, (c, n) in enumerate(tail.ranked)),
        ),
        "selection": out / "let_it_wag.txt",
    }
    paths["selection"].write_text("".join(f"{c}\n" for c, _ in selection.concepts), "utf-8")
    paths["json"] = write_json(
        out / "longtail.json",
        {
            "counts": {
                "source": counts.source,
                "count_type": counts.count_type,
                "column": counts.column,
                "run_id": (counts.run or {}).get("run_id"),
                "notes": list(counts.notes),
            },
            "long_tail": tail.to_dict(),
            "selection": {
                "k": selection.k,
                "min_count": selection.min_count,
                "candidates": selection.candidates,
                "selected": len(selection.concepts),
                "concepts": [{"concept": c, "count": n} for c, n in selection.concepts],
                "benchmark_names_not_in_counts": list(selection.not_in_counts),
            },
            "comparison": comparison.to_dict() if comparison else None,
        },
    )
    paths["plot"] = plots.save(plots.longtail_figure(tail), out / "longtail.png")
    return paths
