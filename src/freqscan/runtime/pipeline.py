"""The count job on Ray Data: plan on the driver, read and tag on actor pools, assemble, commit.

    list shards ─▶ one row per shard ─▶ map_batches(ShardReadWorker, CPU actors)
        read, skip and count bad samples, search captions, decode + resize images (uint8)
      ─▶ map_batches(ImageTagWorker, GPU actors)          (only when a tagger is set)
        normalise on the device, tag, keep scores >= floor
      ─▶ driver: ShardAssembler counts each shard once all its rows arrived, writes its hits
      ─▶ commit the tables (tables/store.py)

Both stages stream: while the GPU tags one shard's images the CPU actors read the next shards,
and Ray Data's backpressure keeps the decoded images in flight bounded. Everything that can be
refused (missing input, unknown column, concept file, spaCy pipeline, checkpoint) is checked on
the driver before the pool starts.
"""

from __future__ import annotations

import json
import logging
import platform
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Protocol

import pyarrow as pa

from freqscan.concepts import ConceptSet, load_concepts
from freqscan.config import CountConfig, ImageConfig, RuntimeConfig
from freqscan.counting.assemble import ShardAssembler, ShardCount
from freqscan.counting.duplicates import DuplicateShard, describe, find_duplicate_shards
from freqscan.counting.tally import Thresholds
from freqscan.errors import UserError
from freqscan.fingerprint import fingerprint_differences, run_fingerprint
from freqscan.image.input import ImageInput
from freqscan.records import SHARD_OK, ShardInfo
from freqscan.runtime.native_stderr import harmless_ray_lines_dropped
from freqscan.runtime.worker import SHARD_TASK, ShardReadWorker
from freqscan.sources import check_source
from freqscan.sources.listing import list_shards
from freqscan.storage import worker_env
from freqscan.tables.build import (
    frequencies_table,
    merge,
    misalignment_degree,
    shard_counts_table,
)
from freqscan.tables.lease import OutputLease
from freqscan.tables.progress import RunProgress, ShardResult
from freqscan.tables.schemas import SHARDS
from freqscan.tables.store import (
    RUN_FAILED,
    RUN_SUCCEEDED,
    DataFile,
    OutputError,
    OutputStore,
    write_data_file,
)
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.pipeline import load_pipeline, pipeline_info

logger = logging.getLogger(__name__)


class Progress(Protocol):
    """What the job reports while it runs (the CLI shows it with rich)."""

    def start(self, shards: int, done: int = 0) -> None: ...

    # A failed shard reports 0 samples: its samples are not in the run's totals.
    def shard_done(self, samples_read: int, failed: bool = False) -> None: ...


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
    tagger: str | None = None
    images_decoded: int = 0
    images_skipped: Counter[str] = field(default_factory=Counter)
    misalignment_degree: float | None = None
    top_integrated: list[tuple[str, int]] = field(default_factory=list)
    # Shards taken from an interrupted run (resume) or the parent run (recount), not read again.
    shards_reused: int = 0
    method: str = ""
    status: str = RUN_SUCCEEDED
    # Counted shards holding sample keys of a shard listed before them: their samples count twice.
    duplicate_shards: list[DuplicateShard] = field(default_factory=list)
    # Why the run failed (status failed); None when it succeeded.
    failure: str | None = None


class RunFailedError(RuntimeError):
    """The run broke ``--max-failed-shards`` or ``--on-duplicate-shards fail``; nothing was
    committed.

    Args:
        summary: What the run read, including the failed and duplicate shards and its failure.
    """

    def __init__(self, summary: RunSummary) -> None:
        super().__init__(
            f"run {summary.run_id} failed: {summary.failure}; nothing was committed, the previous "
            "run stays current"
        )
        self.summary = summary


@dataclass
class _ImagePlan:
    """What the driver prepares once for the tagging stage."""

    config: ImageConfig
    thresholds: Thresholds
    checkpoint_sha256: str
    provenance: dict[str, Any]
    preprocess: ImageInput


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent runs."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def ray_data_name(run_id: str) -> str:
    """The name of a run's Ray Data dataset: Ray tags its operator metrics with
    ``<name>_<uuid>_<n>``, so a dashboard can pick out one run's Ray Data series."""
    return f"freqscan_{run_id}"


def hits_filename(run_id: str, shard: str) -> str:
    """Fixed per (run, shard): a shard written twice overwrites its own file, never adds one."""
    return f"part-{run_id}-{ShardInfo(shard, 0).shard_id}.parquet"


def run_concepts(config: CountConfig) -> ConceptSet:
    """The run's concept set: RAM++'s own tags for the closed-set tagger."""
    from_tags = config.concepts == "rampp" or (
        config.image is not None and config.image.tagger == "rampp-closed"
    )
    if from_tags:
        from freqscan.image.factory import rampp_tag_concepts

        return rampp_tag_concepts()
    return load_concepts(config.concepts)


@dataclass
class RunPlan:
    """What the driver prepares and checks before any worker starts.

    Args:
        config: The run's configuration.
        concepts: Its concept set.
        shards: The shards listed.
        matcher: The concept matcher the workers use.
        spacy_info: The spaCy pipeline's name and versions.
        image: The tagging stage's plan, or ``None`` for a captions-only run.
        stored_keys: Shard path -> URI of its stored caption keys, matched instead of parsing
            its captions (add-concepts on a tagged run); ``None`` parses every caption.
    """

    config: CountConfig
    concepts: ConceptSet
    shards: list[ShardInfo]
    matcher: ConceptMatcher
    spacy_info: dict[str, str]
    image: _ImagePlan | None
    stored_keys: dict[str, str] | None = None

    @property
    def fingerprint(self) -> str:
        """Everything that decides the run's counts (:mod:`freqscan.fingerprint`)."""
        return run_fingerprint(
            self.config,
            self.concepts.content_hash,
            self.spacy_info,
            self.image.checkpoint_sha256 if self.image else None,
        )


@dataclass(frozen=True)
class Reuse:
    """Shards a run takes from a committed run instead of reading them (a recount).

    Args:
        parent_run_id: The committed run.
        results: Shard path -> what that run counted for it.
    """

    parent_run_id: str
    results: dict[str, ShardResult]


def plan_run(config: CountConfig) -> RunPlan:
    """List the shards and check everything that can be refused, before any worker starts."""
    OutputStore(config.out).check_writable()
    concepts = run_concepts(config)
    shards = list_shards(config.source.input, config.source.format)
    check_source(shards, config.source)
    nlp = load_pipeline(config.text.spacy_model)
    matcher = ConceptMatcher.build(concepts, nlp, config.text.method)
    spacy_info = pipeline_info(nlp)
    del nlp  # workers load their own; the driver only needed it to lemmatize concepts
    image = _plan_images(config.image, concepts) if config.image is not None else None
    return RunPlan(config, concepts, shards, matcher, spacy_info, image)


def run_count(config: CountConfig, progress: Progress | None = None) -> RunSummary:
    """Run a count end to end and commit its tables to ``config.out``.

    Args:
        config: The validated run configuration.
        progress: Optional progress reporter.
    """
    return execute(plan_run(config), progress)


def execute(
    plan: RunPlan,
    progress: Progress | None = None,
    reuse: Callable[[OutputStore], Reuse] | None = None,
    kind: str = "count",
) -> RunSummary:
    """Count the planned shards and commit the tables as a new run of ``plan.config.out``.

    Holds the output's writer lease throughout, so a second run on the same output is refused.
    Re-running the command of a run that died resumes it: shards it finished are not read again.

    Args:
        plan: From :func:`plan_run`.
        progress: Optional progress reporter.
        reuse: Called once the lease is held; its shards are taken instead of read.
        kind: Recorded in ``runs.kind``.
    """
    t0 = time.perf_counter()
    config = plan.config
    # Taken once the run is known to be valid: a refused run leaves no trace in the output.
    store = OutputStore(config.out)
    with OutputLease.acquire(store.out, new_run_id()) as lease:
        if kind == "count" and not config.force:
            refuse_another_configuration(store, plan.fingerprint)
        ended = {r["run_id"] for r in store.runs().to_pylist()} if store.exists() else set()
        state = RunProgress.open(store.out, plan.fingerprint, lease.holder, plan.shards, ended)
        if state.resumed:
            logger.warning(
                "resuming run %s: %d of %d shards already done",
                state.run_id,
                len(state.finished),
                len(plan.shards),
            )
        reused = reuse(store) if reuse is not None else None
        taken = {**(reused.results if reused else {}), **state.finished}
        todo = [s for s in plan.shards if s.path not in taken]
        t_count = time.perf_counter()
        results = dict(taken)
        if todo:
            with harmless_ray_lines_dropped():
                results.update(_count_on_ray(plan, todo, len(taken), state, progress))
        count_seconds = time.perf_counter() - t_count
        done = [results[s.path] for s in plan.shards]
        lease.check()
        summary = _commit(
            plan,
            done,
            state,
            store,
            kind=kind,
            parent_run_id=reused.parent_run_id if reused else None,
            reused=len(taken),
        )
        summary.seconds = time.perf_counter() - t0
        summary.count_seconds = count_seconds
        state.finish()
    if summary.status == RUN_FAILED:
        raise RunFailedError(summary)
    return summary


class OtherConfigurationError(OutputError):
    """The output's current run counted another input or configuration (see ``force``)."""


def refuse_another_configuration(store: OutputStore, fingerprint: str) -> None:
    """Refuse a count whose fingerprint differs from that of the output's current run: it would
    become the output's next version, and ``freqscan diff`` would compare different datasets.

    Raises:
        OtherConfigurationError: They differ; the message lists how.
    """
    runs = store.runs().to_pylist() if store.exists() else []
    if not any(r["status"] == RUN_SUCCEEDED for r in runs):
        return  # no version yet
    current = store.current_run()
    differences = fingerprint_differences(current.get("fingerprint"), fingerprint)
    if differences:
        raise OtherConfigurationError(
            f"{store.out}: its current version, run {current['run_id']}, counted another input "
            f"or configuration: {'; '.join(differences)}. This count would become its next "
            "version and `freqscan diff` would compare different datasets: count into another "
            "--out, or pass --force to append it anyway"
        )


def _commit(
    plan: RunPlan,
    done: list[ShardResult],
    state: RunProgress,
    store: OutputStore,
    kind: str,
    parent_run_id: str | None,
    reused: int,
) -> RunSummary:
    """Write the run's tables and, last, its ``runs`` row (nothing but that row if it failed)."""
    config, concepts, image, spacy_info = plan.config, plan.concepts, plan.image, plan.spacy_info
    run_id = state.run_id
    ok = [d for d in done if d.outcome.status == SHARD_OK]
    total = merge(d.tally for d in ok)
    samples_scanned = sum(d.outcome.stats.samples_counted for d in ok)
    thresholds = image.thresholds if image else None
    provenance = {
        "dataset": config.dataset_name,
        "input": ",".join(config.source.input),
        "method": config.text.method,
        "spacy_pipeline": spacy_info["spacy_pipeline"],
        "spacy_pipeline_version": spacy_info["spacy_pipeline_version"],
        "spacy_version": spacy_info["spacy_version"],
        "concept_set_hash": concepts.content_hash,
        **(image.provenance if image else {}),
        "run_id": run_id,
    }
    failed = [
        {"shard": d.info.path, "reason": d.outcome.error_reason, "error": d.outcome.error}
        for d in done
        if d.outcome.status != SHARD_OK
    ]
    duplicates = find_duplicate_shards([(d.info.path, d.outcome.key_summary) for d in ok])
    failures = []
    limit = config.max_failed_shards
    if limit is not None and len(failed) > limit:
        failures.append(f"{len(failed)} shard(s) failed, more than --max-failed-shards {limit}")
    if duplicates and config.on_duplicate_shards == "fail":
        failures.append(
            f"{len(duplicates)} shard(s) hold sample keys of another shard "
            f"(--on-duplicate-shards fail): {describe(duplicates)}"
        )
    run_failed = bool(failures)
    versions: dict[str, int] = {}
    if not run_failed:  # a failed run commits nothing; the previous run stays current
        per_shard = [(d.info.path, d.tally) for d in ok]
        versions = {
            "hits": store.commit_files("hits", [d.hits for d in ok if d.hits is not None]),
            "caption_keys": store.commit_files(
                "caption_keys", [d.caption_keys for d in ok if d.caption_keys is not None]
            ),
            "shard_counts": store.replace(
                "shard_counts", shard_counts_table(per_shard, image is not None, run_id)
            ),
            "shards": store.replace("shards", shards_table(done, image is not None, run_id)),
            "frequencies": store.replace(
                "frequencies",
                frequencies_table(concepts, total, samples_scanned, provenance, thresholds),
            ),
        }

    def top(counts: Counter[int]) -> list[tuple[str, int]]:
        return [(c.name, counts[c.id]) for c in sorted(concepts, key=lambda c: -counts[c.id])[:10]]

    # Run totals cover the shards that count; a failed shard is reported on its own.
    summary = RunSummary(
        run_id=run_id,
        out=store.out,
        shards_total=len(done),
        shards_ok=len(ok),
        failed_shards=failed,
        samples_read=sum(d.outcome.stats.samples_read for d in ok),
        samples_counted=samples_scanned,
        skipped=sum((d.outcome.stats.skipped for d in ok), Counter()),
        text_hits=sum(total.text.values()),
        concepts=len(concepts),
        concepts_with_hits=sum(1 for c in concepts if total.text[c.id] > 0),
        top=top(total.text),
        seconds=0.0,
        count_seconds=0.0,
        table_versions=versions,
        tagger=config.image.tagger if config.image else None,
        images_decoded=sum(d.outcome.images_decoded for d in ok),
        images_skipped=sum((d.outcome.images_skipped for d in ok), Counter()),
        misalignment_degree=misalignment_degree(total, samples_scanned) if image else None,
        top_integrated=top(total.integrated) if image else [],
        shards_reused=reused,
        method=config.text.method,
        status=RUN_FAILED if run_failed else RUN_SUCCEEDED,
        duplicate_shards=duplicates,
        failure="; ".join(failures) or None,
    )
    store.append_run(
        run_row(
            config,
            concepts,
            summary,
            state.started_at,
            spacy_info,
            image=image,
            text_and_image=total.text_and_image,
            misaligned=total.misaligned,
            kind=kind,
            parent_run_id=parent_run_id,
            status=summary.status,
            fingerprint=plan.fingerprint,
        )
    )
    return summary


def _plan_images(config: ImageConfig, concepts: ConceptSet) -> _ImagePlan:
    """Thresholds, checkpoint hash and provenance of the tagging stage, checked on the driver."""
    from freqscan.image.errors import ImageSetupError

    try:
        from freqscan.image.factory import image_input, run_thresholds
        from freqscan.image.rampp_checkpoint import checkpoint_sha256, read_checkpoint
    except ImportError as exc:
        raise ImageSetupError(
            f'--tagger needs the image extra ({exc.name} is missing): pip install "freqscan[image]"'
        ) from exc

    thresholds = run_thresholds(config, concepts)
    try:
        # Resolves the open_clip model for openclip, so unknown names fail here.
        preprocess = image_input(config)
    except ValueError as exc:
        raise ImageSetupError(str(exc)) from exc
    sha = ""
    if config.tagger != "openclip":
        # Refuse a missing or mismatched checkpoint here, not in every actor's constructor;
        # mapped, not read, so the driver never holds the weights.
        read_checkpoint(config.checkpoint, config.arch, mmap=True)
        sha = checkpoint_sha256(config.checkpoint)
    provenance = {
        "tagger": config.tagger,
        "tagger_checkpoint_sha256": sha or None,
        # The closed set has no descriptions; openclip averages them.
        "description_mode": {"rampp": config.description_mode, "openclip": "mean"}.get(
            config.tagger
        ),
    }
    return _ImagePlan(config, thresholds, sha, provenance, preprocess)


def _count_on_ray(
    plan: RunPlan,
    shards: list[ShardInfo],
    already_done: int,
    state: RunProgress,
    progress: Progress | None,
) -> dict[str, ShardResult]:
    import ray
    import ray.data

    config, concepts, matcher, image = plan.config, plan.concepts, plan.matcher, plan.image
    started_here = _connect(config.runtime)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # freqscan shows its own shard-level progress
        ctx.print_on_execution_start = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = ray.cluster_resources().get("GPU", 0)
        tag_workers = _tag_workers(image.config, gpus) if image else 0
        # The tagging actors each hold a CPU (they feed their device); readers get the rest.
        workers = config.runtime.num_workers or max(1, cpus - tag_workers)
        workers = min(workers, len(shards))
        stored = plan.stored_keys
        tasks = [
            {
                "path": s.path,
                "size": s.size,
                "mtime": s.mtime,
                "etag": s.etag,
                "caption_keys": stored[s.path] if stored is not None else None,
            }
            for s in shards
        ]
        store_env = worker_env()
        # One block per shard, so the pool hands out shards one at a time.
        ds = ray.data.from_arrow([pa.Table.from_pylist([t], schema=SHARD_TASK) for t in tasks])
        ds = ds.map_batches(
            ShardReadWorker,
            fn_constructor_kwargs={
                "source": config.source,
                "text": config.text,
                "matcher": matcher,
                "image": image.preprocess if image else None,
                "read_retries": config.runtime.read_retries,
                "retry_backoff_s": config.runtime.retry_backoff_s,
                "run_id": state.run_id,
                "dataset": config.dataset_name,
                "out": state.out,
                "stored_keys": stored is not None,
            },
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            # Readers on other nodes must reach the store the driver listed (never credentials).
            **({"runtime_env": {"env_vars": store_env}} if store_env else {}),
        )
        if image is not None:
            ds = _add_tagging(
                ds, image, concepts, tag_workers, gpus, state.run_id, config.dataset_name
            )
        ds.set_name(ray_data_name(state.run_id))
        if progress is not None:
            progress.start(len(shards) + already_done, done=already_done)
        assembler = ShardAssembler(image.thresholds if image else None)
        by_path = {s.path: s for s in shards}
        done: dict[str, ShardResult] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for shard in assembler.add(batch):
                # The hits file first, then the marker that says the shard is finished.
                hits = _write_hits(state.out, state.run_id, shard)
                result = ShardResult(
                    by_path[shard.outcome.shard],
                    shard.outcome,
                    shard.tally,
                    hits,
                    shard.outcome.caption_keys,
                )
                state.record(result)
                done[result.info.path] = result
                if progress is not None:
                    ok = shard.outcome.status == SHARD_OK
                    progress.shard_done(shard.outcome.stats.samples_read if ok else 0, not ok)
    finally:
        if started_here:
            ray.shutdown()
    missing = {s.path for s in shards} - set(done)
    if missing:
        raise RuntimeError(
            f"Ray returned no result for {len(missing)} shard(s): {sorted(missing)[:5]}"
        )
    return done


def _gpus_per_tag_worker(config: ImageConfig, gpus: float) -> float:
    if config.gpus_per_worker is not None:
        return config.gpus_per_worker
    return 1 if gpus else 0


def _tag_workers(config: ImageConfig, gpus: float) -> int:
    if config.workers is not None:
        return config.workers
    per = _gpus_per_tag_worker(config, gpus)
    return max(1, int(gpus // per)) if per else 1


def _add_tagging(
    ds,
    image: _ImagePlan,
    concepts: ConceptSet,
    workers: int,
    gpus: float,
    run_id: str,
    dataset: str,
):
    """Append the tagging stage; label embeddings are built once here, on a GPU if any."""
    import ray
    import ray.data

    from freqscan.runtime.tagging import ImageTagWorker, build_labels

    cfg = image.config
    per = _gpus_per_tag_worker(cfg, gpus)
    try:
        labels = ray.get(build_labels.options(num_gpus=1 if gpus else 0).remote(cfg, concepts))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):  # weights that cannot be fetched: one line
            raise exc.cause from None
        raise
    return ds.map_batches(
        ImageTagWorker,
        fn_constructor_kwargs={
            "config": cfg,
            "concepts": concepts,
            "labels": labels,
            "floor": image.thresholds.floor,
            "checkpoint_sha256": image.checkpoint_sha256,
            "run_id": run_id,
            "dataset": dataset,
        },
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_gpus=per,
        num_cpus=1,
    )


def _write_hits(out: str, run_id: str, shard: ShardCount) -> DataFile | None:
    if not shard.hits.num_rows:
        return None
    hits = shard.hits.append_column("run_id", pa.repeat(run_id, shard.hits.num_rows))
    return write_data_file(out, "hits", hits_filename(run_id, shard.outcome.shard), hits)


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


def shards_table(done: list[ShardResult], tagged: bool, run_id: str) -> pa.Table:
    rows = []
    for d in done:
        o, t, info = d.outcome, d.tally, d.info
        ok = o.status == SHARD_OK
        rows.append(
            {
                "shard": info.path,
                "shard_id": info.shard_id,
                "size": info.size,
                "mtime": info.mtime,
                "etag": info.etag,
                "status": o.status,
                "error_reason": o.error_reason,
                "error": o.error,
                "read_attempts": o.read_attempts,
                "samples_read": o.stats.samples_read,
                "samples_counted": o.stats.samples_counted if ok else 0,
                "samples_skipped": o.stats.samples_skipped,
                "skipped": list(o.stats.skipped.items()),
                "html_captions": o.stats.html_captions,
                "text_hits": sum(t.text.values()),
                "images_decoded": o.images_decoded if tagged else None,
                "images_skipped": list(o.images_skipped.items()) if tagged else None,
                "text_and_image": t.text_and_image if tagged else None,
                "misaligned_samples": t.misaligned if tagged else None,
                "key_digest": o.key_summary.digest if o.key_summary else None,
                "key_sketch": list(o.key_summary.sketch) if o.key_summary else None,
                "run_id": run_id,
            }
        )
    return pa.Table.from_pylist(rows, schema=SHARDS)


def _versions(spacy_info: dict[str, str]) -> dict[str, str]:
    packages = ("freqscan", "ray", "spacy", "deltalake", "pyarrow", "duckdb")
    versions = {p: metadata.version(p) for p in packages}
    versions["python"] = platform.python_version()
    versions.update(spacy_info)
    return versions


def run_row(
    config: CountConfig,
    concepts: ConceptSet,
    summary: RunSummary,
    started: datetime,
    spacy_info: dict[str, str],
    image: _ImagePlan | None,
    text_and_image: int,
    misaligned: int,
    kind: str = "count",
    parent_run_id: str | None = None,
    status: str = RUN_SUCCEEDED,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    thresholds = image.thresholds if image else None
    return {
        "run_id": summary.run_id,
        "status": status,
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
        "shards_reused": summary.shards_reused,
        "samples_read": summary.samples_read,
        "samples_counted": summary.samples_counted,
        "samples_skipped": sum(summary.skipped.values()),
        "text_hits": summary.text_hits,
        "concepts_with_hits": summary.concepts_with_hits,
        "kind": kind,
        "parent_run_id": parent_run_id,
        "tagger": summary.tagger,
        # NULL when every concept has its own threshold (RAM++ closed set).
        "image_threshold": (
            thresholds.default if thresholds and not thresholds.per_concept else None
        ),
        "score_floor": thresholds.floor if thresholds else None,
        "images_decoded": summary.images_decoded if image else None,
        "images_skipped": sum(summary.images_skipped.values()) if image else None,
        "text_and_image": text_and_image if image else None,
        "misaligned_samples": misaligned if image else None,
        "misalignment_degree": summary.misalignment_degree,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "versions": json.dumps(_versions(spacy_info), sort_keys=True),
        "table_versions": json.dumps(summary.table_versions, sort_keys=True),
        "fingerprint": fingerprint,
        "duplicate_shards": json.dumps([asdict(d) for d in summary.duplicate_shards]),
    }
