"""Keep an output current when its input changes: ``freqscan recount DIR``.

The current run's ``shards`` table holds every shard's fingerprint (size, mtime, etag) as it was
listed. Listing the input again sorts the shards into added, changed, removed and unchanged.
Unchanged shards keep what the current run counted for them, read back from its tables (outcome
from ``shards``, counts from ``shard_counts``, hits file from ``hits``); added and changed shards
go through the count job; removed ones drop out. The result is committed like any count, as a
new run of kind ``recount``, and equals a fresh full count of the input as it is now. An
unchanged shard that failed stays failed, with its reason, unless ``retry_failed`` reads it
again: else a scheduled recount would commit the same counts as a new version on every run.

A recount only reuses counts made with the same configuration: the run fingerprints
(:attr:`freqscan.runtime.pipeline.RunPlan.fingerprint`) must match, else the differences are
listed and the recount is refused unless every shard is to be read again (``--full``).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from freqscan.config import CountConfig
from freqscan.counting.duplicates import KeySummary
from freqscan.counting.shard import ShardOutcome
from freqscan.counting.tally import ShardTally
from freqscan.fingerprint import fingerprint_differences
from freqscan.records import SHARD_OK, ShardInfo, ShardStats
from freqscan.runtime.pipeline import Progress, Reuse, RunSummary, execute, plan_run
from freqscan.tables.progress import ShardResult
from freqscan.tables.schemas import grid_field
from freqscan.tables.store import DataFile, OutputError, OutputStore


class RecountRefusedError(OutputError):
    """The recount's configuration differs from the current run's; counts cannot be reused."""


@dataclass(frozen=True)
class RecountPlan:
    """How the input differs from what the current run counted.

    Args:
        parent_run_id: The run the recount starts from.
        added: Shards listed now that the run did not count.
        changed: Shards whose size, mtime or etag differ from the run's (and, to retry them,
            shards that failed in it).
        removed: Paths the run counted that are no longer listed.
        unchanged: Shards whose counts, or failure, are taken over.
        estimated_seconds: The parent run's seconds per byte times the bytes to read.
        failed: The unchanged shards that failed in the run: they stay failed.
    """

    parent_run_id: str
    added: tuple[ShardInfo, ...]
    changed: tuple[ShardInfo, ...]
    removed: tuple[str, ...]
    unchanged: tuple[ShardInfo, ...]
    estimated_seconds: float | None = None
    failed: tuple[ShardInfo, ...] = ()

    @property
    def to_read(self) -> tuple[ShardInfo, ...]:
        return self.added + self.changed

    @property
    def nothing_to_do(self) -> bool:
        return not (self.added or self.changed or self.removed)

    @property
    def bytes_to_read(self) -> int:
        return sum(s.size for s in self.to_read)


@dataclass
class RecountResult:
    """What ``recount`` found, and the new run if it made one (not for a dry run or no change)."""

    plan: RecountPlan
    differences: list[str]
    summary: RunSummary | None = None


def recount(
    out: str,
    overrides: dict[str, Any] | None = None,
    *,
    dry_run: bool = False,
    full: bool = False,
    retry_failed: bool = False,
    progress: Progress | None = None,
) -> RecountResult:
    """Recount ``out``'s input as it is now, reading only what changed since its current run.

    Args:
        out: The output directory.
        overrides: Config values replacing the current run's, as ``{"section.key": value}``
            (e.g. ``{"source.input": ("s3://b/new/*.tar",), "runtime.num_workers": 4}``).
        dry_run: Plan only: list shards, compare, estimate; commit nothing.
        full: Read every shard again (required when the configuration changed).
        retry_failed: Read the shards that failed in the current run again, changed or not.
        progress: Optional progress reporter.

    Raises:
        RecountRefusedError: The configuration differs and ``full`` is not set.
    """
    store = OutputStore(out)
    parent = store.current_run()
    config = _with_overrides(CountConfig.from_dict(json.loads(parent["config"])), overrides or {})
    config = dataclasses.replace(config, out=store.out)
    run_plan = plan_run(config)
    differences = fingerprint_differences(parent.get("fingerprint"), run_plan.fingerprint)
    if differences and not full:
        raise RecountRefusedError(
            f"{store.out}: the recount's configuration differs from run {parent['run_id']}'s: "
            + "; ".join(differences)
            + ". Its counts cannot be reused: run with --full to read every shard again with "
            "the new configuration (as a new version of this output)"
        )
    parent_shards = store.snapshot(parent["run_id"])["shards"].to_table().to_pylist()
    plan = plan_recount(
        parent_shards, run_plan.shards, parent, full=full, retry_failed=retry_failed
    )
    if dry_run or plan.nothing_to_do:
        return RecountResult(plan, differences)
    grid = run_plan.image.thresholds.known_grid if run_plan.image else ()

    def reuse(locked: OutputStore) -> Reuse:
        current = locked.current_run()
        if current["run_id"] != parent["run_id"]:
            raise OutputError(
                f"{store.out}: run {current['run_id']} committed while this recount was planned; "
                "run the recount again"
            )
        return Reuse(parent["run_id"], previous_results(locked, parent, plan.unchanged, grid))

    summary = execute(run_plan, progress, reuse=reuse, kind="recount")
    return RecountResult(plan, differences, summary)


def _with_overrides(config: CountConfig, overrides: dict[str, Any]) -> CountConfig:
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            sections.setdefault(section, {})[name] = value
        else:
            top[section] = value
    for section, values in sections.items():
        top[section] = dataclasses.replace(getattr(config, section), **values)
    return dataclasses.replace(config, **top)


def plan_recount(
    parent_shards: Iterable[dict[str, Any]],
    listed: Sequence[ShardInfo],
    parent: dict[str, Any],
    full: bool = False,
    retry_failed: bool = False,
) -> RecountPlan:
    """Compare the shards listed now with the ``shards`` rows of the run recounted.

    An unchanged shard the run recorded as failed is unchanged: reading the same bytes again
    fails again. With ``retry_failed`` it counts as changed (a failure may have been the
    store's), and with ``full`` every shard the run counted does.
    """
    before = {r["shard"]: r for r in parent_shards}
    added, changed, unchanged = [], [], []
    for shard in listed:
        row = before.get(shard.path)
        if row is None:
            added.append(shard)
        elif (
            full
            or (retry_failed and row["status"] != SHARD_OK)
            or _fingerprint(row) != _listed(shard)
        ):
            changed.append(shard)
        else:
            unchanged.append(shard)
    now = {s.path for s in listed}
    removed = tuple(sorted(p for p in before if p not in now))
    to_read = sum(s.size for s in (*added, *changed))
    return RecountPlan(
        parent["run_id"],
        tuple(added),
        tuple(changed),
        removed,
        tuple(unchanged),
        _estimate(parent, sum(r["size"] for r in before.values()), to_read),
        tuple(s for s in unchanged if before[s.path]["status"] != SHARD_OK),
    )


def _estimate(parent: dict[str, Any], parent_bytes: int, to_read: int) -> float | None:
    seconds = (parent["finished_at"] - parent["started_at"]).total_seconds()
    return seconds * to_read / parent_bytes if parent_bytes else None


def _fingerprint(row: dict[str, Any]) -> tuple[int, float | None, str | None]:
    return (row["size"], row["mtime"], row["etag"])


def _listed(shard: ShardInfo) -> tuple[int, float | None, str | None]:
    return (shard.size, shard.mtime, shard.etag)


def previous_results(
    store: OutputStore,
    run: dict[str, Any],
    shards: Sequence[ShardInfo],
    grid: Sequence[float],
) -> dict[str, ShardResult]:
    """What run ``run`` counted for ``shards``, read back from its tables.

    Args:
        store: The output.
        run: The run's ``runs`` row.
        shards: Shards (unchanged since that run) to read back.
        grid: The run's known grid thresholds (empty for a text-only run), so a shard with no
            image hit gets the same empty grid a fresh tally gives it.
    """
    wanted = {s.path: s for s in shards}
    snapshot = store.snapshot(run["run_id"])
    rows = {
        r["shard"]: r for r in snapshot["shards"].to_table().to_pylist() if r["shard"] in wanted
    }
    tallies = {path: _empty_tally(grid) for path in wanted}
    counts = snapshot["shard_counts"].to_table(filter=_in("shard", wanted)).to_pylist()
    for row in counts:
        _add_counts(tallies[row["shard"]], row, grid)
    by_id = {s.shard_id: s.path for s in shards}
    versions = json.loads(run["table_versions"])
    files: dict[str, dict[str, DataFile]] = {"hits": {}, "caption_keys": {}}
    for table, found in files.items():
        # A run of an older freqscan kept no caption keys: its shards get none.
        for f in store.data_files(table, versions[table]) if table in versions else ():
            shard_id = PurePosixPath(f.path).stem.rsplit("-", 1)[-1]
            if shard_id in by_id:
                found[by_id[shard_id]] = f
    results = {}
    for path, info in wanted.items():
        row = rows[path]
        tally = tallies[path]
        tally.text_and_image = row["text_and_image"] or 0
        tally.misaligned = row["misaligned_samples"] or 0
        results[path] = ShardResult(
            info,
            _outcome(row),
            tally,
            files["hits"].get(path),
            files["caption_keys"].get(path),
        )
    return results


def _in(column: str, values: Iterable[str]) -> pads.Expression:
    return pads.field(column).isin(pa.array(list(values), pa.string()))


def _empty_tally(grid: Sequence[float]) -> ShardTally:
    return ShardTally(
        image_grid={t: Counter() for t in grid}, integrated_grid={t: Counter() for t in grid}
    )


def _add_counts(tally: ShardTally, row: dict[str, Any], grid: Sequence[float]) -> None:
    concept = row["concept_id"]
    for counter, value in (
        (tally.text, row["text_count"]),
        (tally.image, row["image_count"]),
        (tally.integrated, row["integrated_count"]),
    ):
        if value:
            counter[concept] = value
    for name, into in (
        ("image_counts", tally.image_grid),
        ("integrated_counts", tally.integrated_grid),
    ):
        for t in grid:
            value = (row[name] or {}).get(grid_field(t))
            if value:
                into[t][concept] = value


def _outcome(row: dict[str, Any]) -> ShardOutcome:
    stats = ShardStats(
        row["samples_read"],
        row["samples_counted"],
        row["html_captions"],
        Counter(dict(row["skipped"])),
    )
    return ShardOutcome(
        row["shard"],
        row["status"],
        0,
        stats,
        row["images_decoded"] or 0,
        Counter(dict(row["images_skipped"] or [])),
        row["error_reason"],
        row["error"],
        row["read_attempts"] or 1,
        # A run of an older freqscan kept no key summaries: its shards are not compared.
        key_summary=(
            KeySummary(row["key_digest"], tuple(row["key_sketch"]))
            if row.get("key_digest")
            else None
        ),
    )
