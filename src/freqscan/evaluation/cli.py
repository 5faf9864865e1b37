"""Command line of the evaluation jobs: ``freqscan eval ...`` and ``freqscan report``.

The main CLI mounts these with ``app.add_typer(eval_app, name="eval")`` and
``app.command("report")(report)``. User errors (a missing file, an unknown model, a source in no
known format) end with exit code 2 and one line on stderr, as in the rest of freqscan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from freqscan.evaluation.sources import (
    COUNT_TYPES,
    PAPER_PROMPTS,
    PAPER_SOURCE,
    is_freqscan_output,
)
from freqscan.terminal import console, err, fail, print_table, styled

eval_app = typer.Typer(
    help="Evaluation jobs on the frequency table: log-linear fits, zero-shot accuracy, "
    "long tail, cross-dataset correlation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_EVAL_OUT = "freqscan-eval"
SOURCE_HELP = (
    f"freqscan output directory, '{PAPER_SOURCE}' (the paper's CC3M files shipped with "
    "freqscan), a directory of the paper's *_search_counts.json files, or a .json/.csv file"
)


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors a user can fix (a bad path, a file in no known format, bad numbers in it): shown
    as one line. ``EvalInputError`` is a ``ValueError``."""
    from freqscan.tables.store import OutputError

    return (OutputError, OSError, ValueError)


def _default_out(counts: str, out: str | None) -> str:
    """``OUT/eval`` of a freqscan output (where ``freqscan report`` looks), else ./freqscan-eval."""
    if out:
        return out
    if is_freqscan_output(counts):
        from freqscan.evaluation.report import EVAL_SUBDIR

        return str(Path(counts) / EVAL_SUBDIR)
    return DEFAULT_EVAL_OUT


def _print_notes(notes) -> None:
    for note in notes:
        err.print(styled(("note:", "yellow"), f" {note}"), soft_wrap=True)


def _print_wrote_to(target: object) -> None:
    console.print(styled("Wrote to ", (str(target), "bold"), ":"), soft_wrap=True)


def _print_outputs(paths: dict, what: dict[str, str]) -> None:
    for key, path in paths.items():
        label = what.get(key) or what.get(key.split("_", 1)[0], "")
        console.print(styled(f"  {path}  ", (label, "dim")), soft_wrap=True)


def _f(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


@eval_app.command()
def loglinear(
    counts: Annotated[str, typer.Option("--counts", "-c", help=f"Counts: {SOURCE_HELP}.")],
    performance: Annotated[
        str,
        typer.Option(
            "--performance",
            "-p",
            help=f"Per-class metrics: '{PAPER_SOURCE}', a directory of "
            "<dataset>_<prompt>_results.json (the paper's or `eval zeroshot`'s), one such file, "
            "or a CSV with concept,metric[,model,dataset,prompt].",
        ),
    ],
    count_type: Annotated[
        list[str] | None,
        typer.Option(
            "--count-type",
            "-t",
            help=f"Count type(s): {', '.join(COUNT_TYPES)} (paper files also take a method such "
            "as rampp0.5). Repeatable. Default: integrated.",
        ),
    ] = None,
    prompt: Annotated[
        list[str] | None,
        typer.Option(help=f"Prompt mode(s) ({', '.join(PAPER_PROMPTS)}). Default: all found."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model(s), key or label such as RN50. Default: all."),
    ] = None,
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            "-d",
            help="Downstream dataset(s) to pool. Default: the paper's 18 Fig. 2 datasets for "
            "the paper's results, else all.",
        ),
    ] = None,
    pretrain: Annotated[
        str | None, typer.Option(help="Pretraining set of the paper's count files (cc3m).")
    ] = None,
    run: Annotated[str | None, typer.Option(help="Run id of a freqscan output.")] = None,
    bins: Annotated[int, typer.Option(help="Bin edges (numpy.linspace num); the paper: 12.")] = 12,
    per_dataset: Annotated[
        bool, typer.Option(help="Also fit each downstream dataset alone.")
    ] = True,
    out: Annotated[
        str | None,
        typer.Option(
            "--out", "-o", help=f"Output directory. Default: OUT/eval, else ./{DEFAULT_EVAL_OUT}."
        ),
    ] = None,
) -> None:
    """Accuracy vs pretraining frequency: the paper's binned rho and a robust fit (Fig. 2)."""
    from freqscan.evaluation import loglinear as job
    from freqscan.evaluation.sources import (
        load_counts,
        load_performance,
        model_label,
    )

    types = count_type or ["integrated"]
    try:
        perfs = load_performance(
            performance, prompts=prompt or (), models=model or (), datasets=dataset or ()
        )
        sources = [load_counts(counts, t, pretrain=pretrain, run_id=run) for t in types]
        chosen = dataset or job.default_datasets(perfs)
        result = job.loglinear(
            sources, perfs, datasets=chosen, n_edges=bins, per_dataset=per_dataset
        )
        target = _default_out(counts, out)
        paths = job.write_outputs(result, target)
    except _user_errors() as exc:
        fail(exc)
    _print_notes(result.notes)
    table = Table(
        "model",
        "prompt",
        "counts",
        "n",
        "rho (bins)",
        "p",
        "slope/decade [95% CI]",
        "Spearman",
        title=f"Log-linear fits, pooled over {len(chosen)} dataset(s)",
    )
    for s in result.series:
        r = s.robust
        table.add_row(
            model_label(s.model),
            s.prompt or "",
            s.count_column,
            f"{s.binned.n_points:,}",
            f"{_f(s.binned.rho)} ({len(s.binned.used_bins)})",
            _f(s.binned.p_value, ".1e"),
            f"{_f(r.slope_per_decade)} [{_f(r.ci_low)}, {_f(r.ci_high)}]",
            _f(r.spearman_rho),
        )
    print_table(table)
    _print_wrote_to(str(target))
    _print_outputs(
        paths,
        {
            "table": "one row per series, pooled and per dataset: rho, p, slope, CI, Spearman",
            "json": "every number: bin edges, bin means and sizes, fits, inputs, notes",
            "points": "the joined points: dataset, concept, count, metric",
            "plot": "mean metric per bin vs frequency (log axis), one line per model",
        },
    )


@eval_app.command()
def zeroshot(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="ImageFolder directory (ROOT/<class>/<image>), or webdataset tar files, "
            "directories of them or globs."
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="open_clip architecture (ViT-B-32, RN50...).")
    ],
    pretrained: Annotated[
        str | None,
        typer.Option(help="Pretrained tag (openai, laion400m_e32...) or local weights file."),
    ] = None,
    model_config: Annotated[
        str | None,
        typer.Option(help="JSON architecture config to register (its file stem is the name)."),
    ] = None,
    prompt: Annotated[
        list[str] | None,
        typer.Option(
            help="Prompt mode(s): simple ('a photo of a {c}.'), ensemble (80 templates), or a "
            "file of templates with {c}. Repeatable. Default: simple and ensemble."
        ),
    ] = None,
    classnames: Annotated[
        str | None,
        typer.Option(help="Class names file (one per line, or a JSON list), in label order."),
    ] = None,
    class_field: Annotated[
        str | None,
        typer.Option(help="Field of each sample's .json holding its class (default: label...)."),
    ] = None,
    dataset_name: Annotated[
        str | None, typer.Option(help="Dataset name in file names. Default: the folder name.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    device: Annotated[
        str | None, typer.Option(help="Device (cuda, cpu...). Default: cuda when available.")
    ] = None,
    precision: Annotated[str, typer.Option(help="open_clip precision.")] = "fp32",
    out: Annotated[str, typer.Option("--out", "-o", help="Output directory.")] = DEFAULT_EVAL_OUT,
) -> None:
    """Per-class zero-shot accuracy of an open_clip model on a labelled image set."""
    from freqscan.evaluation import zeroshot as job

    modes = prompt or ["simple", "ensemble"]
    try:
        names = job.read_classnames(classnames) if classnames else None
        data = job.load_labelled_set(inputs, names, class_field, dataset_name)
        zs = job.load_model(
            model, pretrained, device=device, precision=precision, model_config=model_config
        )
        if not pretrained:
            err.print(styled(("note:", "yellow"), " no --pretrained: the model has random weights"))
        result = job.zero_shot(zs, data, modes, batch_size)
        paths = job.write_outputs(result, out)
    except _user_errors() as exc:
        fail(exc)
    console.print(
        styled(
            (result.model_key, "bold green"),
            f" on {result.dataset}: {len(result.keys):,} images, "
            f"{len(result.classnames):,} classes, {result.device}, {result.seconds:.1f}s",
        ),
        soft_wrap=True,
    )
    if result.skipped:
        reasons = ", ".join(f"{k}: {v:,}" for k, v in sorted(result.skipped.items()))
        console.print(f"skipped samples: {reasons}")
    for pr in result.prompts:
        console.print(
            f"  {pr.prompt} ({pr.templates} template(s)): top-1 {pr.overall:.2f}%, "
            f"mean per-class {sum(pr.accuracy.values()) / max(len(pr.accuracy), 1):.2f}%"
        )
    _print_wrote_to(out)
    _print_outputs(
        paths,
        {
            "results": "the paper's format {model: {full, classwise}}, for eval loglinear",
            "plot": "per-class accuracy, sorted",
            "per_class": "model, dataset, prompt, class, correct, images, accuracy",
            "predictions": "one row per image and prompt: key, label, prediction",
            "summary": "model, device, images, skipped samples, accuracy per prompt",
        },
    )


@eval_app.command()
def longtail(
    counts: Annotated[str, typer.Option("--counts", "-c", help=f"Counts: {SOURCE_HELP}.")],
    count_type: Annotated[
        str,
        typer.Option("--count-type", "-t", help="integrated (text for text-only runs), text..."),
    ] = "integrated",
    k: Annotated[int, typer.Option("--k", help="Rarest concepts to select.")] = 290,
    min_count: Annotated[
        int, typer.Option(help="Only concepts with at least this many occurrences.")
    ] = 0,
    benchmark: Annotated[
        str | None,
        typer.Option(help="Concept list to select from (text, one per line; or CSV 'concept')."),
    ] = None,
    benchmark_dataset: Annotated[
        list[str] | None,
        typer.Option(help="Select from the concepts of these downstream datasets. Repeatable."),
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option(help=f"Reference list to compare with; '{PAPER_SOURCE}': the paper's 290."),
    ] = None,
    pretrain: Annotated[str | None, typer.Option(help="Pretraining set of paper files.")] = None,
    run: Annotated[str | None, typer.Option(help="Run id of a freqscan output.")] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out", "-o", help=f"Output directory. Default: OUT/eval, else ./{DEFAULT_EVAL_OUT}."
        ),
    ] = None,
) -> None:
    """The long tail of concept frequencies and a "Let it Wag!" selection of rare concepts."""
    from freqscan.evaluation import longtail as job
    from freqscan.evaluation.sources import load_counts, read_concept_list

    try:
        source = load_counts(counts, count_type, pretrain=pretrain, run_id=run)
        candidates = None
        if benchmark:
            candidates = read_concept_list(benchmark)
        if benchmark_dataset:
            candidates = (candidates or []) + job.benchmark_from_datasets(source, benchmark_dataset)
        tail = job.long_tail(source.counts, label=source.label)
        selection = job.let_it_wag(source.counts, candidates, k=k, min_count=min_count)
        reference = read_concept_list(compare) if compare else None
        comparison = (
            job.compare([c for c, _ in selection.concepts], reference) if reference else None
        )
        target = _default_out(counts, out)
        paths = job.write_outputs(tail, selection, comparison, source, target)
    except _user_errors() as exc:
        fail(exc)
    _print_notes(source.notes)
    found = sum(1 for _, n in tail.ranked if n > 0)
    console.print(
        f"{source.label}: {tail.n_concepts:,} concepts, {found:,} found at least once; "
        f"top 10% hold {100 * tail.top_decile_mass:.1f}% of occurrences; median {tail.median:g}"
    )
    shares = ", ".join(f"<{t:,}: {100 * s:.1f}%" for t, s in tail.share_below.items())
    console.print(f"share of concepts under: {shares}")
    console.print(
        f"selected {len(selection.concepts)} of {selection.candidates:,} candidates "
        f"(k={k}, min count {min_count})"
        + (
            f"; {len(selection.not_in_counts)} benchmark names not in the counts"
            if selection.not_in_counts
            else ""
        )
    )
    if comparison:
        console.print(
            f"vs {compare or ''}: {len(comparison.overlap)} in both, "
            f"{len(comparison.only_selected)} only selected, {len(comparison.only_reference)} "
            f"only in the reference (Jaccard {comparison.jaccard:.3f})"
        )
    _print_wrote_to(str(target))
    _print_outputs(
        paths,
        {
            "table": "rank, concept, count, normalised count",
            "selection": "the selected concepts, rarest first",
            "json": "long-tail shares, the selection with counts, the comparison",
            "plot": "sorted normalised frequencies; share of concepts under thresholds",
        },
    )


@eval_app.command()
def correlate(
    a: Annotated[str, typer.Argument(help=f"First counts: {SOURCE_HELP}.")],
    b: Annotated[str, typer.Argument(help="Second counts, same forms.")],
    count_type: Annotated[
        str, typer.Option("--count-type", "-t", help="Count type of both.")
    ] = "integrated",
    count_type_b: Annotated[
        str | None, typer.Option(help="Count type of the second, if different.")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out", "-o", help=f"Output directory. Default: A/eval, else ./{DEFAULT_EVAL_OUT}."
        ),
    ] = None,
) -> None:
    """Correlation of concept frequencies between two outputs (Spearman; Pearson of log)."""
    from freqscan.evaluation import correlate as job
    from freqscan.evaluation.sources import load_counts

    try:
        ca = load_counts(a, count_type)
        cb = load_counts(b, count_type_b or count_type)
        result = job.correlate(ca, cb)
        target = _default_out(a, out)
        paths = job.write_outputs(result, ca, cb, target)
    except _user_errors() as exc:
        fail(exc)
    _print_notes([*ca.notes, *cb.notes])
    console.print(
        f"{result.label_a} vs {result.label_b}: {result.n:,} concepts in both "
        f"({result.only_a:,} only in the first, {result.only_b:,} only in the second); "
        f"Spearman rho {_f(result.spearman_rho, '.3f')}, "
        f"Pearson r of log10 counts {_f(result.pearson_log_r, '.3f')}"
    )
    _print_wrote_to(str(target))
    _print_outputs(
        paths,
        {
            "table": "concept, count in the first, count in the second",
            "json": "Spearman and Pearson with p-values, join sizes, sources",
            "plot": "log-log scatter of the two counts with the diagonal",
        },
    )


def report(
    out: Annotated[str, typer.Argument(help="Output directory of a count.")],
    run: Annotated[str | None, typer.Option(help="Report this run id.")] = None,
    eval_dir: Annotated[
        list[str] | None,
        typer.Option("--eval", help="More directories of eval outputs (OUT/eval is read)."),
    ] = None,
    html: Annotated[
        str | None, typer.Option("--html", help="Where to write. Default: OUT/report.html.")
    ] = None,
    top: Annotated[int, typer.Option(help="Concepts in the top and bottom tables.")] = 25,
) -> None:
    """Write one self-contained HTML page: run summary, long tail, top/bottom concepts, evals."""
    from freqscan.evaluation.report import build_report

    try:
        result = build_report(out, run_id=run, eval_dirs=eval_dir or (), html_path=html, top=top)
    except _user_errors() as exc:
        fail(exc)
    _print_notes(result.notes)
    console.print(
        styled(
            "Wrote ",
            (str(result.path), "bold"),
            f" (self-contained HTML): run {result.run_id} summary, long-tail plot, top and "
            f"bottom {top} concepts by {result.count_column} of {result.concepts:,}, "
            f"{len(result.eval_images)} eval plot(s) and {len(result.eval_tables)} log-linear "
            "table(s).",
        ),
        soft_wrap=True,
    )
