"""Arrow rows of `shard_counts`, `frequencies` and `shards` from per-shard tallies.

Shared by a count run and by ``freqscan rethreshold``, so both write identical tables from
identical tallies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from freqscan.concepts import ConceptSet
from freqscan.counting.tally import ShardTally, Thresholds
from freqscan.tables.schemas import FREQUENCIES, SHARD_COUNTS, grid_field


def merge(tallies: Iterable[ShardTally]) -> ShardTally:
    """Sum shard tallies into run totals."""
    total = ShardTally()
    for t in tallies:
        total.text += t.text
        total.image += t.image
        total.integrated += t.integrated
        for name in ("image_grid", "integrated_grid"):
            into = getattr(total, name)
            for threshold, counts in getattr(t, name).items():
                into.setdefault(threshold, Counter()).update(counts)
        total.text_and_image += t.text_and_image
        total.misaligned += t.misaligned
    return total


def _grid(grid: dict[float, Counter[int]], concept_id: int) -> dict[str, int | None] | None:
    if not grid:
        return None
    return {grid_field(t): counts[concept_id] for t, counts in grid.items()}


def _counts(t: ShardTally, concept_id: int, tagged: bool) -> dict[str, Any]:
    return {
        "text_count": t.text[concept_id],
        "image_count": t.image[concept_id] if tagged else None,
        "integrated_count": t.integrated[concept_id] if tagged else None,
        "image_counts": _grid(t.image_grid, concept_id) if tagged else None,
        "integrated_counts": _grid(t.integrated_grid, concept_id) if tagged else None,
    }


def shard_counts_table(
    per_shard: Sequence[tuple[str, ShardTally]], tagged: bool, run_id: str
) -> pa.Table:
    """Sparse per-shard counts: one row per (shard, concept) with any nonzero count."""
    rows = []
    for shard, t in per_shard:
        ids = set(t.text) | set(t.image)
        for counts in t.image_grid.values():
            ids |= set(counts)
        for concept_id in sorted(ids):
            rows.append(
                {"shard": shard, "concept_id": concept_id, **_counts(t, concept_id, tagged)}
                | {"run_id": run_id}
            )
    return pa.Table.from_pylist(rows, schema=SHARD_COUNTS)


def frequencies_table(
    concepts: ConceptSet,
    total: ShardTally,
    samples_scanned: int,
    provenance: dict[str, Any],
    thresholds: Thresholds | None,
) -> pa.Table:
    """One row per concept of the set, zeros included."""
    tagged = thresholds is not None
    rows = [
        {
            "concept_id": c.id,
            "concept": c.name,
            "concept_datasets": list(c.datasets),
            **_counts(total, c.id, tagged),
            "samples_scanned": samples_scanned,
            "image_threshold": thresholds.of(c.id) if tagged else None,
            "score_floor": thresholds.floor if tagged else None,
            **provenance,
        }
        for c in concepts
    ]
    return pa.Table.from_pylist(rows, schema=FREQUENCIES)


def misalignment_degree(total: ShardTally, samples_scanned: int) -> float | None:
    """Misaligned samples / samples scanned (DESIGN.md); ``None`` with nothing scanned."""
    return total.misaligned / samples_scanned if samples_scanned else None
