"""The count job on Ray Data: plan on the driver, count shards on an actor pool, commit.

    list shards ─▶ from_items (one row per shard) ─▶ map_batches(ShardCountWorker, actors)
        ─▶ one outcome row per shard ─▶ driver: sum partial counts ─▶ commit the tables

Everything that can be refused (missing input, unknown column, unknown concept file, no spaCy
pipeline) is checked on the driver before Ray starts, so users get a clear message instead of a
traceback from inside a worker.
"""

from __future__ import annotations

import json
import logging
import platform
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Protocol

import pyarrow as pa

from freqscan.concepts import ConceptSet, load_concepts
from freqscan.config import CountConfig, RuntimeConfig
from freqscan.records import SHARD_OK, ShardInfo
from freqscan.runtime.worker import SHARD_TASK, ShardCountWorker
from freqscan.sources import check_source
from freqscan.sources.listing import list_shards
from freqscan.tables.schemas import FREQUENCIES, SHARD_COUNTS, SHARDS
from freqscan.tables.store import RUN_SUCCEEDED, DataFile, OutputStore
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.pipeline import load_pipeline, pipeline_info

logger = logging.getLogger(__name__)


class Progress(Protocol):
    """What the job reports while it runs (the CLI shows it with rich)."""

    def start(self, shards: int) -> None: ...

    def shard_done(self, samples_read: int) -> None: ...


@dataclass
class RunSummary:
    """What a finished count run produced, for the CLI and for callers."""

    run_id: str
    out: str
    shards_total: int
    shards_ok: int
    failed_shards: list[dict[str, Any]]
    samples_read: int
    samples_counted: int
    skipped: Counter[str]
    text_hits: int
    concepts: int
    concepts_with_hits: int
    top: list[tuple[str, int]]
    seconds: float
    count_seconds: float
    table_versions: dict[str, int] = field(default_factory=dict)


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent runs."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_count(config: CountConfig, progress: Progress | None = None) -> RunSummary:
    """Run a count end to end and commit its tables to ``config.out``.

    Args:
        config: The validated run configuration.
        progress: Optional progress reporter.
    """
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    run_id = new_run_id()

    concepts = load_concepts(config.concepts)
    shards = list_shards(config.source.input, config.source.format)
    check_source(shards, config.source)
    nlp = load_pipeline(config.text.spacy_model)
    matcher = ConceptMatcher.build(concepts, nlp, config.text.method)
    spacy_info = pipeline_info(nlp)
    del nlp  # workers load their own; the driver only needed it to lemmatize concepts

    t_count = time.perf_counter()
    outcomes = _count_on_ray(config, shards, matcher, run_id, progress)
    count_seconds = time.perf_counter() - t_count

    store = OutputStore(config.out)
    by_path = {s.path: s for s in shards}
    counts = Counter[int]()
    for o in outcomes:
        if o["status"] == SHARD_OK:
            counts.update(dict(zip(o["concept_ids"], o["concept_counts"], strict=True)))
    ok = [o for o in outcomes if o["status"] == SHARD_OK]
    samples_scanned = sum(o["samples_counted"] for o in ok)
    provenance = {
        "dataset": config.dataset_name,
        "input": ",".join(config.source.input),
        "method": config.text.method,
        "spacy_pipeline": spacy_info["spacy_pipeline"],
        "spacy_pipeline_version": spacy_info["spacy_pipeline_version"],
        "spacy_version": spacy_info["spacy_version"],
        "concept_set_hash": concepts.content_hash,
        "run_id": run_id,
    }

    versions = {
        "hits": store.commit_files("hits", _hits_files(ok)),
        "shard_counts": store.replace("shard_counts", _shard_counts(ok, run_id)),
        "shards": store.replace("shards", _shards_table(outcomes, by_path, run_id)),
        "frequencies": store.replace(
            "frequencies", _frequencies(concepts, counts, samples_scanned, provenance)
        ),
    }
    # Run totals cover the shards that count; a failed shard is reported on its own.
    skipped = sum((Counter(o["skipped"]) for o in ok), Counter())
    failed = [
        {"shard": o["shard"], "reason": o["error_reason"], "error": o["error"]}
        for o in outcomes
        if o["status"] != SHARD_OK
    ]
    summary = RunSummary(
        run_id=run_id,
        out=store.out,
        shards_total=len(shards),
        shards_ok=len(ok),
        failed_shards=failed,
        samples_read=sum(o["samples_read"] for o in ok),
        samples_counted=samples_scanned,
        skipped=skipped,
        text_hits=sum(counts.values()),
        concepts=len(concepts),
        concepts_with_hits=sum(1 for c in concepts if counts[c.id] > 0),
        top=[(c.name, counts[c.id]) for c in sorted(concepts, key=lambda c: -counts[c.id])[:10]],
        seconds=time.perf_counter() - t0,
        count_seconds=count_seconds,
        table_versions=versions,
    )
    store.append_run(_run_row(config, concepts, summary, started, spacy_info))
    return summary


def _count_on_ray(
    config: CountConfig,
    shards: list[ShardInfo],
    matcher: ConceptMatcher,
    run_id: str,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    import ray
    import ray.data

    started_here = _connect(config.runtime)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # freqscan shows its own shard-level progress
        ctx.print_on_execution_start = False
        workers = config.runtime.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers = min(workers, len(shards))
        tasks = [{"path": s.path, "size": s.size, "mtime": s.mtime, "etag": s.etag} for s in shards]
        # One block per shard, so the pool hands out shards one at a time.
        ds = ray.data.from_arrow([pa.Table.from_pylist([t], schema=SHARD_TASK) for t in tasks])
        ds = ds.map_batches(
            ShardCountWorker,
            fn_constructor_kwargs={
                "source": config.source,
                "text": config.text,
                "matcher": matcher,
                "out": OutputStore(config.out).out,
                "run_id": run_id,
            },
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        if progress is not None:
            progress.start(len(shards))
        outcomes: dict[str, dict[str, Any]] = {}
        for row in ds.iter_rows():
            # Keyed by shard: even if a retried task delivered a shard twice, it counts once.
            if row["shard"] not in outcomes and progress is not None:
                progress.shard_done(row["samples_read"])
            outcomes.setdefault(row["shard"], {**row, "skipped": json.loads(row["skipped"])})
    finally:
        if started_here:
            ray.shutdown()
    missing = {s.path for s in shards} - set(outcomes)
    if missing:
        raise RuntimeError(
            f"Ray returned no result for {len(missing)} shard(s): {sorted(missing)[:5]}"
        )
    return [outcomes[s.path] for s in shards]


def _connect(runtime: RuntimeConfig) -> bool:
    """Connect to the given cluster or start Ray in-process; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    # "local" forces an in-process Ray even when RAY_ADDRESS is set: the CLI already turned
    # RAY_ADDRESS into runtime.address, so an unset address means the user wants a local run.
    # Ray's own INFO/WARNING chatter would interleave with freqscan's progress display; errors
    # still show, and the full logs stay in Ray's session directory.
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ray.init(
        address=runtime.address or "local",
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    return True


def _hits_files(ok: list[dict[str, Any]]) -> list[DataFile]:
    return [
        DataFile(o["hits_file"], o["hits_size"], o["hits_mtime"], o["hits_rows"])
        for o in ok
        if o["hits_file"]
    ]


def _shard_counts(ok: list[dict[str, Any]], run_id: str) -> pa.Table:
    shard = [o["shard"] for o in ok for _ in o["concept_ids"]]
    return pa.table(
        {
            "shard": shard,
            "concept_id": [i for o in ok for i in o["concept_ids"]],
            "text_count": [n for o in ok for n in o["concept_counts"]],
            "run_id": [run_id] * len(shard),
        },
        schema=SHARD_COUNTS,
    )


def _shards_table(
    outcomes: list[dict[str, Any]], by_path: dict[str, ShardInfo], run_id: str
) -> pa.Table:
    rows = []
    for o in outcomes:
        info = by_path[o["shard"]]
        skipped = o["skipped"]
        rows.append(
            {
                "shard": info.path,
                "shard_id": info.shard_id,
                "size": info.size,
                "mtime": info.mtime,
                "etag": info.etag,
                "status": o["status"],
                "error_reason": o["error_reason"],
                "error": o["error"],
                "samples_read": o["samples_read"],
                "samples_counted": o["samples_counted"] if o["status"] == SHARD_OK else 0,
                "samples_skipped": sum(skipped.values()),
                "skipped": list(skipped.items()),
                "html_captions": o["html_captions"],
                "text_hits": sum(o["concept_counts"]) if o["status"] == SHARD_OK else 0,
                "run_id": run_id,
            }
        )
    return pa.Table.from_pylist(rows, schema=SHARDS)


def _frequencies(
    concepts: ConceptSet, counts: Counter[int], samples_scanned: int, provenance: dict[str, str]
) -> pa.Table:
    rows = [
        {
            "concept_id": c.id,
            "concept": c.name,
            "concept_datasets": list(c.datasets),
            "text_count": counts[c.id],
            "samples_scanned": samples_scanned,
            **provenance,
        }
        for c in concepts
    ]
    return pa.Table.from_pylist(rows, schema=FREQUENCIES)


def _versions(spacy_info: dict[str, str]) -> dict[str, str]:
    packages = ("freqscan", "ray", "spacy", "deltalake", "pyarrow", "duckdb")
    versions = {p: metadata.version(p) for p in packages}
    versions["python"] = platform.python_version()
    versions.update(spacy_info)
    return versions


def _run_row(
    config: CountConfig,
    concepts: ConceptSet,
    summary: RunSummary,
    started: datetime,
    spacy_info: dict[str, str],
) -> dict[str, Any]:
    return {
        "run_id": summary.run_id,
        "status": RUN_SUCCEEDED,
        "started_at": started,
        "finished_at": datetime.now(UTC),
        "dataset": config.dataset_name,
        "input": ",".join(config.source.input),
        "method": config.text.method,
        "concept_set": concepts.source,
        "concept_set_hash": concepts.content_hash,
        "concepts": summary.concepts,
        "shards_total": summary.shards_total,
        "shards_ok": summary.shards_ok,
        "shards_failed": len(summary.failed_shards),
        "samples_read": summary.samples_read,
        "samples_counted": summary.samples_counted,
        "samples_skipped": sum(summary.skipped.values()),
        "text_hits": summary.text_hits,
        "concepts_with_hits": summary.concepts_with_hits,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "versions": json.dumps(_versions(spacy_info), sort_keys=True),
        "table_versions": json.dumps(summary.table_versions, sort_keys=True),
    }
