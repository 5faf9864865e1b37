"""Gather each shard's sample rows as they stream in, and count a shard once it is complete.

Rows of one shard reach the driver in any order and interleaved with other shards (the tagging
stage batches across shards). A shard is complete when its outcome row has arrived together with
every sample row it announces. Rows are kept by (shard, key): a row delivered twice, as a retried
task can do, counts once. Rows stay Arrow columns throughout: a shard's rows are made unique
by key once enough of them arrived, then counted by :func:`~freqscan.counting.reduce.tally_columns`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freqscan.counting.reduce import tally_columns
from freqscan.counting.shard import ShardOutcome
from freqscan.counting.tally import ShardTally, Thresholds
from freqscan.records import SHARD_OK
from freqscan.tables.schemas import HITS

HIT_COLUMNS = [f for f in HITS if f.name != "run_id"]
_HIT_SCHEMA = pa.schema(HIT_COLUMNS)


@dataclass
class ShardCount:
    """A complete shard: its outcome, counts and hits (schema ``HITS`` without run_id)."""

    outcome: ShardOutcome
    tally: ShardTally
    hits: pa.Table


@dataclass
class _Pending:
    parts: list[pa.Table] = field(default_factory=list)
    rows: int = 0  # rows in parts, duplicates included until unique() drops them
    outcome: ShardOutcome | None = None

    def add(self, rows: pa.Table) -> None:
        self.parts.append(rows)
        self.rows += rows.num_rows

    def unique(self) -> pa.Table:
        """The rows sorted by key, each key once (its first arrival); kept as the only part."""
        table = pa.concat_tables(self.parts) if self.parts else _HIT_SCHEMA.empty_table()
        # Arrow's sort is stable: of a key's copies, the first to arrive comes first.
        table = table.take(pc.sort_indices(table, [("key", "ascending")]))
        keys = table.column("key")
        first = np.ones(table.num_rows, dtype=bool)
        first[1:] = pc.not_equal(keys[1:], keys[:-1]).to_numpy(zero_copy_only=False)
        table = table.filter(first)
        self.parts, self.rows = [table], table.num_rows
        return table


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
        # The image bytes (if any) are dropped here; rows cast to one schema so parts concat.
        is_outcome = pc.is_valid(batch.column("outcome"))
        samples = batch.filter(pc.invert(is_outcome)).select(_HIT_SCHEMA.names).cast(_HIT_SCHEMA)
        shard_of_sample = samples.column("shard")
        touched = set()
        for shard in pc.unique(shard_of_sample).to_pylist():
            if shard in self._done:
                continue  # a late duplicate of a shard already counted
            rows = samples.filter(pc.equal(shard_of_sample, shard))
            self._pending.setdefault(shard, _Pending()).add(rows)
            touched.add(shard)
        # Outcome rows are one per shard read: few, so they are decoded one by one.
        announced = batch.filter(is_outcome)
        for shard, outcome in zip(
            announced.column("shard").to_pylist(),
            announced.column("outcome").to_pylist(),
            strict=True,
        ):
            if shard in self._done:
                continue
            pending = self._pending.setdefault(shard, _Pending())
            pending.outcome = pending.outcome or ShardOutcome.from_json(outcome)
            touched.add(shard)
        done = []
        for shard in sorted(touched):
            rows = self._complete(shard)
            if rows is not None:
                done.append(self._finish(shard, rows))
        return done

    def _complete(self, shard: str) -> pa.Table | None:
        """The shard's rows, unique by key, once every announced row arrived; else ``None``."""
        pending = self._pending[shard]
        if pending.outcome is None or pending.rows < pending.outcome.rows:
            return None  # rows are missing even counting duplicates
        rows = pending.unique()
        if rows.num_rows > pending.outcome.rows:
            raise RuntimeError(
                f"{shard}: {rows.num_rows} rows arrived for a shard that announced "
                f"{pending.outcome.rows}"
            )
        return rows if rows.num_rows == pending.outcome.rows else None

    def _finish(self, shard: str, rows: pa.Table) -> ShardCount:
        outcome = self._pending.pop(shard).outcome
        self._done.add(shard)
        assert outcome is not None
        if outcome.status != SHARD_OK:
            return ShardCount(outcome, ShardTally(), _HIT_SCHEMA.empty_table())
        text, image = rows.column("text_concept_ids"), rows.column("image_concept_ids")
        counted = tally_columns(text, image, rows.column("image_scores"), self._thresholds)
        return ShardCount(outcome, counted, rows.filter(pc.or_(_any(text), _any(image))))


def _any(lists: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row, whether its list holds a value (null lists hold none)."""
    return pc.fill_null(pc.greater(pc.list_value_length(lists), 0), False)
