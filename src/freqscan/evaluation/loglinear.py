"""``freqscan eval loglinear``: performance against pretraining frequency, the paper's Fig. 2.

A *series* is one model, one prompt mode and one count type. Its points are the classes of the
chosen downstream datasets, each with the class's metric and its concept's count; the paper
pools every dataset into one set of points per series. Each series gets the paper's binned rho
(:func:`~freqscan.evaluation.binning.paper_loglinear`) and a robust fit on the raw points
(:func:`~freqscan.evaluation.binning.robust_fit`), pooled and per dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from freqscan.evaluation._io import write_csv, write_json
from freqscan.evaluation.binning import (
    PAPER_BIN_EDGES,
    BinnedFit,
    RobustFit,
    paper_loglinear,
    robust_fit,
)
from freqscan.evaluation.sources import (
    PAPER_FIG2_DATASETS,
    ConceptCounts,
    EvalInputError,
    JoinedPoints,
    Performance,
    join,
    model_label,
)

POOLED = "pooled"


@dataclass(frozen=True, slots=True)
class SeriesResult:
    """The fits of one series.

    Args:
        model: Model key.
        prompt: Prompt mode, ``None`` if unknown.
        count_type: Count type asked for.
        count_column: Count actually used (paper method or frequencies column).
        counts_label: Where the counts come from, in short.
        points: The joined points.
        binned: The paper's binned fit over all datasets.
        robust: The robust fit over all datasets.
        per_dataset: Dataset -> (binned, robust) fits on that dataset alone.
    """

    model: str
    prompt: str | None
    count_type: str
    count_column: str
    counts_label: str
    points: JoinedPoints
    binned: BinnedFit
    robust: RobustFit
    per_dataset: dict[str, tuple[BinnedFit, RobustFit]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        parts = [model_label(self.model)]
        if self.prompt:
            parts.append(self.prompt)
        parts.append(self.count_type)
        return " / ".join(parts)

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.points.datasets))


@dataclass(frozen=True, slots=True)
class LoglinearResult:
    """Every series of one ``eval loglinear`` run, with what went in."""

    series: tuple[SeriesResult, ...]
    n_edges: int
    inputs: dict
    notes: tuple[str, ...]


def default_datasets(performances: Iterable[Performance]) -> list[str]:
    """The paper's 18 Fig. 2 datasets when the results are the paper's benchmarks (it leaves
    imagenet-r out), else every dataset given, in order."""
    present = list(dict.fromkeys(p.dataset for p in performances))
    paper = [d for d in PAPER_FIG2_DATASETS if d in present]
    if paper and set(present) <= {*PAPER_FIG2_DATASETS, "imagenet-r"}:
        return paper
    return present


def loglinear(
    counts: Sequence[ConceptCounts],
    performances: Sequence[Performance],
    *,
    datasets: Sequence[str] | None = None,
    n_edges: int = PAPER_BIN_EDGES,
    per_dataset: bool = True,
) -> LoglinearResult:
    """Fit every (model, prompt) x count type series.

    Args:
        counts: One :class:`ConceptCounts` per count type.
        performances: Per-class metrics (any models, prompts, datasets).
        datasets: Downstream datasets to pool, in order (default: every one in
            ``performances``).
        n_edges: Bin edges of the paper's procedure.
        per_dataset: Also fit each dataset alone.
    """
    if not counts:
        raise EvalInputError("no counts given")
    if datasets is None:
        datasets = list(dict.fromkeys(p.dataset for p in performances))
    order = {d: i for i, d in enumerate(datasets)}
    keys = list(dict.fromkeys((p.model, p.prompt) for p in performances))
    notes: list[str] = []
    for c in counts:
        notes.extend(c.notes)
    series: list[SeriesResult] = []
    for model, prompt in keys:
        chosen = sorted(
            (
                p
                for p in performances
                if p.model == model and p.prompt == prompt and p.dataset in order
            ),
            key=lambda p: order[p.dataset],
        )
        if not chosen:
            continue
        for c in counts:
            points = join(c, chosen)
            label = f"{model_label(model)} {prompt or ''} {c.count_type}".replace("  ", " ")
            if points.skipped_datasets:
                notes.append(
                    f"{label}: no {c.column} counts for {', '.join(points.skipped_datasets)}; "
                    "left out"
                )
            for ds, missing in points.unmatched.items():
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                notes.append(f"{label}: {ds}: {len(missing)} classes without a count ({shown})")
            if not points.counts:
                notes.append(f"{label}: no class has a count; series left out")
                continue
            fits: dict[str, tuple[BinnedFit, RobustFit]] = {}
            if per_dataset:
                for ds in dict.fromkeys(points.datasets):
                    dc, dm = points.subset(ds)
                    fits[ds] = (paper_loglinear(dc, dm, n_edges), robust_fit(dc, dm))
            series.append(
                SeriesResult(
                    model=model,
                    prompt=prompt,
                    count_type=c.count_type,
                    count_column=c.column,
                    counts_label=c.label,
                    points=points,
                    binned=paper_loglinear(points.counts, points.metrics, n_edges),
                    robust=robust_fit(points.counts, points.metrics),
                    per_dataset=fits,
                )
            )
    if not series:
        raise EvalInputError("no series: no class of the chosen datasets has a count")
    inputs = {
        "counts": [
            {
                "count_type": c.count_type,
                "column": c.column,
                "label": c.label,
                "source": c.source,
                "run_id": (c.run or {}).get("run_id"),
                "notes": list(c.notes),
            }
            for c in counts
        ],
        "datasets": list(datasets),
    }
    return LoglinearResult(tuple(series), n_edges, inputs, tuple(dict.fromkeys(notes)))


# --------------------------------------------------------------------------------- outputs

TABLE_COLUMNS = (
    "model",
    "prompt",
    "count_type",
    "count_column",
    "scope",
    "n_points",
    "rho",
    "p_value",
    "bins_used",
    "slope_per_decade",
    "ci_low",
    "ci_high",
    "spearman_rho",
    "spearman_p",
)


def table_rows(result: LoglinearResult) -> list[dict]:
    """One row per series (scope ``pooled``) and per series and dataset."""
    rows = []
    for s in result.series:
        scopes = [(POOLED, s.binned, s.robust)] + [
            (ds, b, r) for ds, (b, r) in s.per_dataset.items()
        ]
        for scope, b, r in scopes:
            rows.append(
                {
                    "model": s.model,
                    "prompt": s.prompt or "",
                    "count_type": s.count_type,
                    "count_column": s.count_column,
                    "scope": scope,
                    "n_points": b.n_points,
                    "rho": b.rho,
                    "p_value": b.p_value,
                    "bins_used": len(b.used_bins),
                    "slope_per_decade": r.slope_per_decade,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "spearman_rho": r.spearman_rho,
                    "spearman_p": r.spearman_p,
                }
            )
    return rows


def to_json(result: LoglinearResult) -> dict:
    """Every number of the run, as written to ``loglinear.json``."""
    return {
        "procedure": {
            "zeros_to": 1,
            "x": "ln(count)",
            "edges": f"numpy.linspace(min(x), max(x), num={result.n_edges})",
            "assign": "numpy.digitize(x, edges, right=True)",
            "rho": "pearsonr(edges[k], mean metric of bin k) over non-empty bins 1.."
            f"{result.n_edges - 2}",
            "robust": "Theil-Sen slope of metric on log10(count) (per decade), Sen 1968 interval;"
            " Spearman on the raw points",
        },
        "inputs": result.inputs,
        "notes": list(result.notes),
        "series": [
            {
                "label": s.label,
                "model": s.model,
                "model_label": model_label(s.model),
                "prompt": s.prompt,
                "count_type": s.count_type,
                "count_column": s.count_column,
                "counts_label": s.counts_label,
                "datasets": list(s.datasets),
                "skipped_datasets": list(s.points.skipped_datasets),
                "unmatched_classes": {k: list(v) for k, v in s.points.unmatched.items()},
                "pooled": {"binned": s.binned.to_dict(), "robust": s.robust.to_dict()},
                "per_dataset": {
                    ds: {"binned": b.to_dict(), "robust": r.to_dict()}
                    for ds, (b, r) in s.per_dataset.items()
                },
            }
            for s in result.series
        ],
    }


def write_outputs(result: LoglinearResult, out: str | Path, prefix: str = "loglinear") -> dict:
    """Write ``<prefix>.csv`` (table), ``<prefix>.json`` (every number), ``<prefix>_points.csv``
    (the joined points) and ``<prefix>.png`` (the plot); returns name -> path."""
    from freqscan.evaluation import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "table": out / f"{prefix}.csv",
        "json": out / f"{prefix}.json",
        "points": out / f"{prefix}_points.csv",
        "plot": out / f"{prefix}.png",
    }
    write_csv(
        paths["table"],
        TABLE_COLUMNS,
        ([row[c] for c in TABLE_COLUMNS] for row in table_rows(result)),
    )
    write_json(paths["json"], to_json(result))
    write_csv(
        paths["points"],
        ("model", "prompt", "count_type", "dataset", "concept", "count", "metric"),
        (
            (s.model, s.prompt or "", s.count_type, ds, concept, n, metric)
            for s in result.series
            for ds, concept, n, metric in zip(
                s.points.datasets, s.points.concepts, s.points.counts, s.points.metrics, strict=True
            )
        ),
    )
    fig = plots.loglinear_figure(result)
    plots.save(fig, paths["plot"])
    return paths
