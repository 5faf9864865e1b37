"""ShardAssembler: shards completed from rows arriving in any order, each row counted once."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from freqscan.counting.assemble import HIT_COLUMNS, ShardAssembler
from freqscan.counting.shard import SAMPLE_ROWS, ShardOutcome
from freqscan.counting.tally import Thresholds, tally
from freqscan.records import SHARD_FAILED, SHARD_OK, ShardStats

DOG, CAT, CAR = 1, 2, 3
TH = Thresholds(default=0.7, floor=0.5)


def row(shard, key, text=(), image=None, scores=None):
    return {
        "shard": shard,
        "key": key,
        "url": f"http://x/{key}",
        "caption": f"caption {key}",
        "metadata": None,
        "text_concept_ids": list(text),
        "image_concept_ids": image,
        "image_scores": scores,
    }


def outcome(shard, rows, status=SHARD_OK):
    o = ShardOutcome(shard, status=status, rows=rows, stats=ShardStats(rows, rows))
    if status != SHARD_OK:
        o.error_reason, o.error = "truncated_tar", f"{shard}: cut short"
    return {"shard": shard, "outcome": o.to_json()}


def batch(*rows):
    return pa.Table.from_pylist(list(rows), schema=SAMPLE_ROWS)


A = [
    row("a.tar", "a2", [DOG], [DOG, CAT], [0.9, 0.6]),
    row("a.tar", "a0", [CAT], [CAT], [0.75]),
    row("a.tar", "a1", [], [CAR], [0.71]),
    row("a.tar", "a3", [CAR], None, None),  # no usable image
]
B = [
    row("b.tar", "b1", [DOG], [CAR], [0.8]),  # misaligned
    row("b.tar", "b0", [DOG], [], []),  # image tagged, nothing at or above the floor
]


def expected(rows):
    """The tally of rows computed directly, on their scores as stored (Arrow float32)."""
    rows = sorted(batch(*rows).to_pylist(), key=lambda r: r["key"])
    return tally(
        [r["text_concept_ids"] for r in rows],
        [r["image_concept_ids"] for r in rows],
        [r["image_scores"] for r in rows],
        TH,
    )


def test_interleaved_out_of_order_rows_complete_each_shard_once():
    asm = ShardAssembler(TH)
    # a's outcome first, b's last; rows of both shards mixed and reversed.
    assert asm.add(batch(outcome("a.tar", 4), B[1], A[3])) == []
    assert asm.add(batch(A[1], B[0])) == []
    assert asm.pending == 2
    done = asm.add(batch(A[0], A[2]))
    assert [d.outcome.shard for d in done] == ["a.tar"]
    assert asm.pending == 1
    (b,) = asm.add(batch(outcome("b.tar", 2)))
    (a,) = done
    assert asm.pending == 0

    assert a.outcome.status == SHARD_OK and a.outcome.rows == 4
    assert a.tally == expected(A)
    assert a.tally.text == Counter({DOG: 1, CAT: 1, CAR: 1})
    assert a.tally.image == Counter({DOG: 1, CAT: 1, CAR: 1})
    assert a.tally.integrated == Counter({DOG: 1, CAT: 1})
    assert (a.tally.text_and_image, a.tally.misaligned) == (2, 0)
    assert b.tally == expected(B)
    assert b.tally.image == Counter({CAR: 1}) and b.tally.integrated == Counter()
    assert (b.tally.text_and_image, b.tally.misaligned) == (1, 1)


def test_the_outcome_row_may_come_in_the_same_batch_as_the_last_rows():
    asm = ShardAssembler(TH)
    (b,) = asm.add(batch(B[0], outcome("b.tar", 2), B[1]))
    assert b.tally == expected(B)
    assert asm.pending == 0


def test_duplicate_rows_count_once():
    asm = ShardAssembler(TH)
    assert asm.add(batch(A[0], A[1], A[0])) == []
    assert asm.add(batch(A[1], A[2], outcome("a.tar", 4))) == []
    # A retried task delivers the outcome again: the first one is kept.
    (a,) = asm.add(batch(A[3], A[2], outcome("a.tar", 4), A[0]))
    assert a.tally == expected(A)
    assert a.hits.num_rows == 4
    # Late duplicates of a completed shard are ignored, not started as a new shard.
    assert asm.add(batch(*A, outcome("a.tar", 4))) == []
    assert asm.pending == 0


def test_a_whole_shard_delivered_twice_counts_once():
    asm = ShardAssembler(TH)
    done = asm.add(batch(*B, outcome("b.tar", 2)))
    done += asm.add(batch(*reversed(B), outcome("b.tar", 2)))
    assert len(done) == 1 and done[0].tally == expected(B)


def test_a_failed_shard_is_discarded_once_all_its_rows_arrived():
    asm = ShardAssembler(TH)
    assert asm.add(batch(outcome("a.tar", 2, SHARD_FAILED), A[1])) == []
    assert asm.pending == 1  # one announced row still missing
    (a,) = asm.add(batch(A[0]))
    assert a.outcome.status == SHARD_FAILED and a.outcome.error_reason == "truncated_tar"
    assert a.tally == type(a.tally)()  # empty
    assert a.hits.num_rows == 0
    assert a.hits.schema == pa.schema(HIT_COLUMNS)
    assert asm.pending == 0
    # Rows of the failed shard arriving late are still ignored.
    assert asm.add(batch(A[2])) == []
    assert asm.pending == 0


def test_a_failed_shard_with_no_rows_completes_on_its_outcome():
    asm = ShardAssembler(TH)
    (a,) = asm.add(batch(outcome("a.tar", 0, SHARD_FAILED)))
    assert a.outcome.status == SHARD_FAILED and a.hits.num_rows == 0


def test_more_rows_than_announced_raises():
    asm = ShardAssembler(TH)
    asm.add(batch(A[0], A[1]))
    with pytest.raises(RuntimeError, match="2 rows arrived for a shard that announced 1"):
        asm.add(batch(outcome("a.tar", 1)))
    # The outcome first, then more distinct rows in one batch than it announced.
    asm = ShardAssembler(TH)
    assert asm.add(batch(outcome("b.tar", 1))) == []
    with pytest.raises(RuntimeError, match="announced 1"):
        asm.add(batch(*B))


def test_hits_hold_only_rows_with_a_text_or_image_hit_sorted_by_key():
    rows = [
        row("c.tar", "c3", [], [], []),  # decoded image, nothing above the floor, no text
        row("c.tar", "c1", [DOG], None, None),  # text only
        row("c.tar", "c2", [], [CAT], [0.55]),  # stored image score only (below 0.7)
        row("c.tar", "c0", [], None, None),  # nothing at all
    ]
    asm = ShardAssembler(TH)
    (c,) = asm.add(batch(*rows, outcome("c.tar", 4)))
    assert c.hits.schema == pa.schema(HIT_COLUMNS)
    assert "run_id" not in c.hits.column_names and "image" not in c.hits.column_names
    hits = c.hits.to_pylist()
    assert [h["key"] for h in hits] == ["c1", "c2"]
    assert hits[0]["text_concept_ids"] == [DOG] and hits[0]["image_concept_ids"] is None
    assert hits[1]["image_concept_ids"] == [CAT]
    assert hits[1]["image_scores"] == pytest.approx([0.55])
    assert hits[1]["url"] == "http://x/c2" and hits[1]["caption"] == "caption c2"
    assert c.tally.image == Counter() and c.tally.image_grid[0.5] == Counter({CAT: 1})


def test_a_text_only_run_without_thresholds():
    asm = ShardAssembler(None)
    text_rows = [row("t.tar", "t1", [DOG, CAT]), row("t.tar", "t0", [DOG])]
    (t,) = asm.add(batch(outcome("t.tar", 2), *text_rows))
    assert t.tally.text == Counter({DOG: 2, CAT: 1})
    assert t.tally.image == Counter() and t.tally.image_grid == {}
    assert [h["key"] for h in t.hits.to_pylist()] == ["t0", "t1"]


def test_rows_still_carrying_image_bytes_are_accepted():
    asm = ShardAssembler(None)
    r = row("i.tar", "i0", [DOG]) | {"image": b"\x00" * 12}
    (i,) = asm.add(batch(r, outcome("i.tar", 1)))
    assert i.tally.text == Counter({DOG: 1}) and i.hits.num_rows == 1
