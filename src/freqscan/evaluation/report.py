"""``freqscan report``: one self-contained HTML page about an output.

The page has the run's summary, the long-tail plot, the most and least frequent concepts, and
every evaluation plot found (``OUT/eval/`` and any directory given), with the pooled rows of
``loglinear.csv``. Images are embedded as base64 PNG data URIs and the style is inline, so the
file can be mailed or archived alone; the page has no script.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freqscan.evaluation import plots
from freqscan.evaluation.longtail import long_tail
from freqscan.evaluation.sources import EvalInputError, counts_from_output

# Eval outputs land here by default, so the report finds them without being told.
EVAL_SUBDIR = "eval"
DEFAULT_TOP = 25
REPORT_NAME = "report.html"

_CSS = """
body { font-family: Georgia, 'DejaVu Serif', serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; margin: .4em 0; }
figure { margin: 1em 0; }
figcaption { color: #555; font-size: .9em; }
.note { color: #8a5300; }
.grid { display: flex; gap: 2em; flex-wrap: wrap; }
.grid > div { flex: 1 1 420px; }
"""


@dataclass(frozen=True, slots=True)
class Report:
    """What the page shows (also returned to the caller)."""

    path: Path
    run_id: str
    concepts: int
    count_column: str
    eval_images: tuple[Path, ...]
    eval_tables: tuple[Path, ...]
    notes: tuple[str, ...]


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dt.datetime):
        return html.escape(value.isoformat(timespec="seconds"))
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_fmt(v)}</td>'
            if isinstance(v, int | float) and not isinstance(v, bool)
            else f"<td>{_fmt(v)}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


RUN_FIELDS = (
    "run_id",
    "status",
    "dataset",
    "input",
    "method",
    "concept_set",
    "concepts",
    "started_at",
    "finished_at",
    "shards_total",
    "shards_ok",
    "shards_failed",
    "samples_read",
    "samples_counted",
    "samples_skipped",
    "text_hits",
    "concepts_with_hits",
    "misalignment_degree",
)


def _run_section(run: dict[str, Any]) -> str:
    rows = [(f, run.get(f)) for f in RUN_FIELDS if f in run]
    if run.get("misalignment_degree") is not None:
        rows.append(("misalignment (%)", 100.0 * run["misalignment_degree"]))
    extra = ""
    try:
        config = json.loads(run.get("config") or "{}")
    except json.JSONDecodeError:
        config = {}
    if config:
        pretty = html.escape(json.dumps(config, indent=1, sort_keys=True))
        extra = f"<details><summary>configuration</summary><pre>{pretty}</pre></details>"
    return _table(("field", "value"), rows) + extra


def _concept_rows(rows: list[dict], names: list[str]) -> list[list]:
    by_name = {r["concept"]: r for r in rows}
    cols = [c for c in ("text_count", "image_count", "integrated_count") if c in rows[0]]
    out = []
    for name in names:
        r = by_name.get(name, {})
        out.append([name, ", ".join(r.get("concept_datasets") or ())] + [r.get(c) for c in cols])
    return out


def _eval_section(dirs: Sequence[Path]) -> tuple[str, list[Path], list[Path]]:
    images: list[Path] = []
    tables: list[Path] = []
    for d in dirs:
        if d.is_dir():
            images += sorted(d.rglob("*.png"))
            tables += sorted(d.rglob("loglinear.csv"))
    parts = []
    for table in tables:
        with open(table, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("scope") == "pooled"]
        if rows:
            header = ("model", "prompt", "count", "n", "rho", "p", "slope/decade", "CI", "Spearman")
            body = [
                [
                    r["model"],
                    r["prompt"],
                    r["count_column"],
                    int(r["n_points"]),
                    _num(r["rho"]),
                    _num(r["p_value"]),
                    _num(r["slope_per_decade"]),
                    f"[{_short(r['ci_low'])}, {_short(r['ci_high'])}]",
                    _num(r["spearman_rho"]),
                ]
                for r in rows
            ]
            parts.append(f"<h3>{html.escape(str(table))}</h3>")
            parts.append(_table(header, body))
    for image in images:
        parts.append(
            f"<figure>{_img(image.read_bytes(), image.name)}"
            f"<figcaption>{html.escape(str(image))}</figcaption></figure>"
        )
    if not parts:
        parts.append(
            "<p>No evaluation outputs found. Run <code>freqscan eval loglinear</code>, "
            "<code>longtail</code>, <code>correlate</code> or <code>zeroshot</code> with "
            f"<code>--out OUT/{EVAL_SUBDIR}</code> and build the report again.</p>"
        )
    return "\n".join(parts), images, tables


def _num(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def _short(text: str) -> str:
    return "n/a" if text in ("", None) else f"{float(text):.3g}"


def build_report(
    out: str,
    *,
    run_id: str | None = None,
    eval_dirs: Sequence[str] = (),
    html_path: str | None = None,
    top: int = DEFAULT_TOP,
    count_type: str = "integrated",
) -> Report:
    """Write the HTML report of output ``out``; returns what it contains.

    Args:
        out: freqscan output directory.
        run_id: Run to report (default: the latest succeeded).
        eval_dirs: Directories of eval outputs, besides ``OUT/eval``.
        html_path: Where to write (default ``OUT/report.html``).
        top: Concepts in the top and bottom tables.
        count_type: Count shown and ranked: integrated (falls back to text for text-only runs).
    """
    from freqscan.query import connect

    counts = counts_from_output(out, count_type, run_id)
    run = counts.run or {}
    con = connect(out, run.get("run_id"))
    try:
        rows = con.sql("SELECT * FROM frequencies ORDER BY concept_id").to_arrow_table().to_pylist()
    finally:
        con.close()
    if not rows:
        raise EvalInputError(f"{out}: the frequencies table is empty")
    tail = long_tail(counts.counts, label=counts.label)
    found = [(c, n) for c, n in tail.ranked if n > 0]
    top_names = [c for c, _ in found[:top]]
    bottom_names = [c for c, _ in sorted(found, key=lambda kv: (kv[1], kv[0]))[:top]]
    zero = tail.n_concepts - len(found)
    cols = [c for c in ("text_count", "image_count", "integrated_count") if c in rows[0]]
    header = ["concept", "datasets", *cols]
    dirs = [Path(out) / EVAL_SUBDIR] + [Path(d) for d in eval_dirs]
    eval_html, images, tables = _eval_section(dirs)
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in counts.notes)
    shares = _table(
        ("occurrences", "share of concepts"),
        [(f"< {t:,}", f"{100 * tail.share_below[t]:.1f}%") for t in tail.thresholds],
    )
    title = f"freqscan report: {run.get('dataset', Path(out).name)}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Output <code>{html.escape(str(Path(out).resolve()))}</code>, run
<code>{html.escape(str(run.get("run_id")))}</code>; counts ranked by
<code>{html.escape(counts.column)}</code>.</p>
{notes}
<h2 id="run">Run summary</h2>
{_run_section(run)}
<h2 id="long-tail">Long tail</h2>
<p>{len(found):,} of {tail.n_concepts:,} concepts occur at least once ({zero:,} never); the 10%
most frequent concepts hold {100 * tail.top_decile_mass:.1f}% of all occurrences; median count
{tail.median:,.1f}.</p>
{_img(plots.png_bytes(plots.longtail_figure(tail)), "long-tail plot")}
{shares}
<div class="grid">
<div><h2 id="top">Top {len(top_names)} concepts</h2>
{_table(header, _concept_rows(rows, top_names))}</div>
<div><h2 id="bottom">Bottom {len(bottom_names)} concepts (found at least once)</h2>
{_table(header, _concept_rows(rows, bottom_names))}</div>
</div>
<h2 id="evaluation">Evaluation</h2>
{eval_html}
<p><small>Written by freqscan on {dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}.
</small></p>
</body></html>
"""
    path = Path(html_path) if html_path else Path(out) / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return Report(
        path=path,
        run_id=str(run.get("run_id")),
        concepts=tail.n_concepts,
        count_column=counts.column,
        eval_images=tuple(images),
        eval_tables=tuple(tables),
        notes=counts.notes,
    )
