"""Figures of the evaluation jobs, in the paper's style (serif, dotted grid, ticks inward).

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, never through
``pyplot``: no global backend is switched, no window opens and nothing leaks between calls.
Every figure has a fixed size in pixels (``figsize * DPI``; no tight bounding box), so callers and
tests know the PNG's dimensions.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator

if TYPE_CHECKING:
    from freqscan.evaluation.correlate import Correlation
    from freqscan.evaluation.loglinear import LoglinearResult
    from freqscan.evaluation.longtail import LongTail

DPI = 100
# One panel is 6.4 x 4.8 inches (matplotlib's default, the paper's figures): 640 x 480 px.
PANEL_SIZE = (6.4, 4.8)
STYLE = {
    "font.family": "serif",
    "grid.linestyle": ":",
    "xtick.direction": "in",
    "ytick.direction": "in",
    "legend.fontsize": 9,
    "axes.labelsize": 12,
    "axes.titlesize": 12,
}
MARKERS = ("o", "s", "d", "^", "v", "P", "X", "*")
LINESTYLES = ("solid", "dashed", "dotted", "dashdot")
COLORS = ("royalblue", "indianred", "forestgreen", "darkorange", "purple", "teal", "goldenrod")
# p below this gets the paper's "**" in the legend.
SIGNIFICANCE = 0.05


def _in_style(build):
    """Build the figure under the paper's rcParams (they are read when artists are made)."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return build(*args, **kwargs)

    return wrapper


def _figure(ncols: int = 1, nrows: int = 1) -> Figure:
    fig = Figure(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _style_axes(ax) -> None:
    ax.grid(True, linestyle=":")
    ax.tick_params(direction="in", which="both")


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG of exactly ``figsize * DPI`` pixels."""
    path = Path(path)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _grid(n: int) -> tuple[int, int]:
    ncols = min(n, 3)
    return ncols, math.ceil(n / ncols)


def rho_label(name: str, rho: float | None, p: float | None) -> str:
    if rho is None:
        return f"{name}, $\\rho$=n/a"
    stars = "**" if p is not None and p < SIGNIFICANCE else ""
    return f"{name}, $\\rho$={rho:.2f}{stars}"


@_in_style
def loglinear_figure(result: LoglinearResult, ylabel: str = "Avg. zero-shot accuracy") -> Figure:
    """Mean metric per bin against frequency (log axis): one panel per prompt and count type,
    one line per model, rho in the legend; the bins that entered rho are drawn."""
    from freqscan.evaluation.sources import model_label

    panels: dict[tuple, list] = {}
    for s in result.series:
        panels.setdefault((s.count_type, s.prompt), []).append(s)
    ncols, nrows = _grid(len(panels))
    fig = _figure(ncols, nrows)
    for i, ((count_type, prompt), series) in enumerate(panels.items()):
        columns = ", ".join(dict.fromkeys(s.count_column for s in series))
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for j, s in enumerate(series):
            b = s.binned
            xs = [b.count_edges[k] for k in b.used_bins]
            ys = [b.bin_means[k] for k in b.used_bins]
            ax.plot(
                xs,
                ys,
                marker=MARKERS[j % len(MARKERS)],
                linestyle=LINESTYLES[j % len(LINESTYLES)],
                color=COLORS[j % len(COLORS)],
                label=rho_label(model_label(s.model), b.rho, b.p_value),
                alpha=0.7,
                markersize=6,
                linewidth=2,
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10.0, numticks=12))
        ax.set_xlabel("Pretraining concept frequency")
        ax.set_ylabel(ylabel)
        what = count_type if columns == count_type else f"{count_type} ({columns})"
        title = f"{what} counts" + (f", {prompt} prompts" if prompt else "")
        ax.set_title(title)
        ax.legend(loc="upper left")
        _style_axes(ax)
    fig.tight_layout()
    return fig


@_in_style
def longtail_figure(tail: LongTail) -> Figure:
    """Left: concepts sorted by frequency (normalised by the largest; log scale), the paper's
    long-tail view; right: share of concepts under each threshold."""
    fig = _figure(2, 1)
    ax = fig.add_subplot(1, 2, 1)
    positive = [n for _, n in tail.ranked if n > 0]
    top = positive[0] if positive else 1
    ax.plot(range(1, len(positive) + 1), [n / top for n in positive], color="royalblue")
    ax.set_yscale("log")
    ax.set_xlabel("Concepts (sorted in desc. freq. order)")
    ax.set_ylabel("Normalised frequency")
    ax.set_title(f"{tail.label}: {len(positive):,} of {tail.n_concepts:,} concepts found")
    _style_axes(ax)
    ax2 = fig.add_subplot(1, 2, 2)
    labels = [f"<{t:,}" for t in tail.thresholds]
    shares = [100.0 * tail.share_below[t] for t in tail.thresholds]
    bars = ax2.bar(labels, shares, color="indianred", alpha=0.8)
    for bar, share in zip(bars, shares, strict=True):
        ax2.annotate(
            f"{share:.1f}%",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax2.set_ylim(0, 105)
    ax2.set_xlabel("Occurrences")
    ax2.set_ylabel("Share of concepts (%)")
    ax2.set_title("Concepts under each frequency")
    _style_axes(ax2)
    fig.tight_layout()
    return fig


@_in_style
def correlate_figure(corr: Correlation) -> Figure:
    """Counts of the same concepts in two outputs (log-log, zeros at 1), with the diagonal."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    xs = [max(a, 1) for a in corr.counts_a]
    ys = [max(b, 1) for b in corr.counts_b]
    ax.scatter(xs, ys, s=6, alpha=0.4, color="royalblue", edgecolors="none")
    top = max(xs + ys + [10])
    ax.plot([1, top], [1, top], color="grey", linestyle="dashed", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{corr.label_a} frequency")
    ax.set_ylabel(f"{corr.label_b} frequency")
    spearman = "n/a" if corr.spearman_rho is None else f"{corr.spearman_rho:.2f}"
    pearson = "n/a" if corr.pearson_log_r is None else f"{corr.pearson_log_r:.2f}"
    ax.set_title(f"Spearman $\\rho$={spearman}, Pearson r(log)={pearson}, n={corr.n:,}")
    _style_axes(ax)
    fig.tight_layout()
    return fig


@_in_style
def accuracy_figure(classes: Sequence[str], accuracies: Sequence[float], title: str) -> Figure:
    """Per-class accuracy, sorted, as bars (the zero-shot job's picture)."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    order = sorted(range(len(classes)), key=lambda i: -accuracies[i])
    ax.bar(range(len(order)), [accuracies[i] for i in order], color="forestgreen", alpha=0.8)
    if len(order) <= 30:
        ax.set_xticks(range(len(order)), [classes[i] for i in order], rotation=60, ha="right")
    ax.set_xlabel("Classes (sorted by accuracy)")
    ax.set_ylabel("Zero-shot accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    _style_axes(ax)
    fig.tight_layout()
    return fig
