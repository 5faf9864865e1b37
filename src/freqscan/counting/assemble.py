"""Gather each shard's sample rows as they stream in, and count a shard once it is complete.

Rows of one shard reach the driver in any order and interleaved with other shards (the tagging
stage batches across shards). A shard is complete when its outcome row has arrived together with
every sample row it announces. Rows are kept by (shard, key): a row delivered twice, as a retried
task can do, counts once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from freqscan.counting.shard import ShardOutcome
from freqscan.counting.tally import ShardTally, Thresholds, tally
from freqscan.records import SHARD_OK
from freqscan.tables.schemas import HITS

HIT_COLUMNS = [f for f in HITS if f.name != "run_id"]


@dataclass
class ShardCount:
    """A complete shard: its outcome, counts and hits (schema ``HITS`` without run_id)."""

    outcome: ShardOutcome
    tally: ShardTally
    hits: pa.Table


@dataclass
class _Pending:
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcome: ShardOutcome | None = None


class ShardAssembler:
    """Collects streamed sample rows per shard.

    Args:
        thresholds: The run's image thresholds; ``None`` when it tags no images.
    """

    def __init__(self, thresholds: Thresholds | None) -> None:
        self._thresholds = thresholds
        self._pending: dict[str, _Pending] = {}
        self._done: set[str] = set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, batch: pa.Table) -> list[ShardCount]:
        """Take a batch of rows; return the shards it completed."""
        touched = set()
        for row in batch.drop_columns(
            [c for c in ("image",) if c in batch.column_names]
        ).to_pylist():
            shard = row["shard"]
            if shard in self._done:
                continue  # a late duplicate of a shard already counted
            pending = self._pending.setdefault(shard, _Pending())
            if row["outcome"] is not None:
                pending.outcome = pending.outcome or ShardOutcome.from_json(row["outcome"])
            else:
                pending.rows.setdefault(row["key"], row)
            touched.add(shard)
        return [self._finish(s) for s in sorted(touched) if self._complete(s)]

    def _complete(self, shard: str) -> bool:
        pending = self._pending[shard]
        if pending.outcome is None:
            return False
        if len(pending.rows) > pending.outcome.rows:
            raise RuntimeError(
                f"{shard}: {len(pending.rows)} rows arrived for a shard that announced "
                f"{pending.outcome.rows}"
            )
        return len(pending.rows) == pending.outcome.rows

    def _finish(self, shard: str) -> ShardCount:
        pending = self._pending.pop(shard)
        self._done.add(shard)
        outcome = pending.outcome
        assert outcome is not None
        if outcome.status != SHARD_OK:
            return ShardCount(outcome, ShardTally(), pa.schema(HIT_COLUMNS).empty_table())
        rows = sorted(pending.rows.values(), key=lambda r: r["key"])
        counted = tally(
            [r["text_concept_ids"] for r in rows],
            [r["image_concept_ids"] for r in rows],
            [r["image_scores"] for r in rows],
            self._thresholds,
        )
        hits = [r for r in rows if r["text_concept_ids"] or r["image_concept_ids"]]
        return ShardCount(
            outcome, counted, pa.Table.from_pylist(hits, schema=pa.schema(HIT_COLUMNS))
        )
