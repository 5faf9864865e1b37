"""Re-threshold a run's image scores without the GPU: ``freqscan rethreshold DIR --threshold T``.

Every score at or above the run's floor is stored per sample in ``hits``, so the image and
integrated counts (and the misalignment) at any threshold >= the floor follow from them alone.
The new counts go through the same :func:`~freqscan.counting.reduce.tally_columns` a count run
uses and are committed as a new run (``kind = rethreshold``) that shares the parent's ``hits``
version. Each hits file holds exactly one shard, so shards are re-counted one file at a time and
memory stays bounded by the largest shard.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from freqscan.concepts import Concept, ConceptSet
from freqscan.config import CountConfig
from freqscan.counting.reduce import tally_columns
from freqscan.counting.tally import ShardTally, Thresholds
from freqscan.fingerprint import with_threshold
from freqscan.records import SHARD_OK
from freqscan.tables.build import (
    frequencies_table,
    merge,
    misalignment_degree,
    shard_counts_table,
)
from freqscan.tables.lease import OutputLease
from freqscan.tables.schemas import FREQUENCIES, FREQUENCY_COUNT_COLUMNS, SHARDS
from freqscan.tables.store import OutputError, OutputStore


@dataclass
class RethresholdSummary:
    run_id: str
    parent_run_id: str
    out: str
    threshold: float
    shards: int
    image_hits: int
    integrated_hits: int
    misalignment_degree: float | None
    top_integrated: list[tuple[str, int]]


def rethreshold(
    out: str,
    threshold: float,
    run_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RethresholdSummary:
    """Recount images at ``threshold`` from the stored scores of a run and commit a new run.

    Args:
        out: The output directory.
        threshold: The new threshold (probability strictly greater counts).
        run_id: The run to start from; the latest succeeded run by default.
        progress: Called with (shards done, shards total).

    Raises:
        OutputError: No such run, the run tagged no images, or the threshold is under its floor.
        OutputBusyError: Another run is writing the output (it holds the writer lease).
    """
    from freqscan.runtime.pipeline import new_run_id

    store = OutputStore(out)
    store.runs()  # refuses a directory with no output before the lease would create it
    # Held from reading the parent until the new run's row is in: no other run writes between.
    with OutputLease.acquire(store.out, new_run_id()) as lease:
        return _rethreshold(store, lease, threshold, run_id, progress)


def _rethreshold(
    store: OutputStore,
    lease: OutputLease,
    threshold: float,
    run_id: str | None,
    progress: Callable[[int, int], None] | None,
) -> RethresholdSummary:
    parent = store.current_run(run_id)
    if parent.get("tagger") is None:
        raise OutputError(f"run {parent['run_id']} tagged no images: nothing to re-threshold")
    floor = parent["score_floor"]
    if threshold < floor:
        raise OutputError(
            f"threshold {threshold} is below run {parent['run_id']}'s score floor {floor}: "
            "scores under the floor were not stored"
        )
    thresholds = Thresholds(threshold, floor)
    snapshot = store.snapshot(parent["run_id"])
    new_id = lease.holder

    shards = snapshot["shards"].to_table().to_pylist()
    ok = {s["shard"] for s in shards if s["status"] == SHARD_OK}
    per_shard: dict[str, ShardTally] = {s: ShardTally() for s in sorted(ok)}
    fragments = list(snapshot["hits"].get_fragments())
    for i, fragment in enumerate(fragments):
        shard, counted = _tally_file(fragment, thresholds)
        if shard is not None:
            per_shard[shard] = counted
        if progress is not None:
            progress(i + 1, len(fragments))
    total = merge(per_shard.values())

    old = snapshot["frequencies"].to_table()
    rows = old.to_pylist()
    concepts = ConceptSet(
        tuple(Concept(r["concept"], tuple(r["concept_datasets"] or ())) for r in rows), "run"
    )
    provenance = {
        k: rows[0][k] for k in FREQUENCIES.names if k not in FREQUENCY_COUNT_COLUMNS and rows
    } | {"run_id": new_id}
    scanned = rows[0]["samples_scanned"] if rows else 0

    for s in shards:
        counted = per_shard.get(s["shard"])
        s["text_and_image"] = counted.text_and_image if counted else s["text_and_image"]
        s["misaligned_samples"] = counted.misaligned if counted else s["misaligned_samples"]
        s["run_id"] = new_id
    versions = json.loads(parent["table_versions"])
    lease.check()
    versions["shard_counts"] = store.replace(
        "shard_counts", shard_counts_table(sorted(per_shard.items()), True, new_id)
    )
    versions["shards"] = store.replace("shards", pa.Table.from_pylist(shards, schema=SHARDS))
    versions["frequencies"] = store.replace(
        "frequencies", frequencies_table(concepts, total, scanned, provenance, thresholds)
    )
    degree = misalignment_degree(total, scanned)
    store.append_run(_run_row(parent, new_id, threshold, total, degree, versions))
    top = sorted(concepts, key=lambda c: -total.integrated[c.id])[:10]
    return RethresholdSummary(
        run_id=new_id,
        parent_run_id=parent["run_id"],
        out=store.out,
        threshold=threshold,
        shards=len(per_shard),
        image_hits=sum(total.image.values()),
        integrated_hits=sum(total.integrated.values()),
        misalignment_degree=degree,
        top_integrated=[(c.name, total.integrated[c.id]) for c in top],
    )


def _tally_file(fragment: pads.Fragment, thresholds: Thresholds) -> tuple[str | None, ShardTally]:
    table = fragment.to_table(
        columns=["shard", "text_concept_ids", "image_concept_ids", "image_scores"]
    )
    if not table.num_rows:
        return None, ShardTally()
    shards = set(table.column("shard").to_pylist())
    if len(shards) != 1:
        raise OutputError(f"{fragment.path}: a hits file holds {len(shards)} shards, not one")
    counted = tally_columns(
        table.column("text_concept_ids"),
        table.column("image_concept_ids"),
        table.column("image_scores"),
        thresholds,
    )
    return shards.pop(), counted


def _run_row(
    parent: dict[str, Any],
    run_id: str,
    threshold: float,
    total: ShardTally,
    degree: float | None,
    versions: dict[str, int],
) -> dict[str, Any]:
    config = CountConfig.from_dict(json.loads(parent["config"]))
    assert config.image is not None
    config = dataclasses.replace(
        config, image=dataclasses.replace(config.image, threshold=threshold)
    )
    now = datetime.now(UTC)
    return parent | {
        "run_id": run_id,
        "started_at": now,
        "finished_at": now,
        "kind": "rethreshold",
        "parent_run_id": parent["run_id"],
        "shards_reused": None,  # reads no shard: every count comes from the parent's hits
        "image_threshold": threshold,
        "text_and_image": total.text_and_image,
        "misaligned_samples": total.misaligned,
        "misalignment_degree": degree,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "table_versions": json.dumps(versions, sort_keys=True),
        "fingerprint": with_threshold(parent.get("fingerprint"), threshold),
    }
