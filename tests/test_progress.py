"""Completion markers: which shards a re-run of a killed job may take instead of reading them;
and the progress bar."""

from __future__ import annotations

import io
import json
from collections import Counter

from rich.console import Console

from freqscan.counting.duplicates import KeySummary
from freqscan.counting.shard import ShardOutcome
from freqscan.counting.tally import ShardTally, tally_from_dict, tally_to_dict
from freqscan.records import SHARD_FAILED, ShardInfo, ShardStats
from freqscan.runtime.progress import RichProgress
from freqscan.tables.progress import PROGRESS_DIR, RunProgress, ShardResult
from freqscan.tables.store import DataFile

SHARDS = [
    ShardInfo(f"/data/part-{i}.parquet", 100 + i, 1700000000.5 + i, f"etag{i}") for i in range(4)
]


def _result(info: ShardInfo, status: str = "ok") -> ShardResult:
    tally = ShardTally(
        text=Counter({1: 3, 7: 1}),
        image=Counter({1: 2}),
        integrated=Counter({1: 1}),
        image_grid={0.5: Counter({1: 2, 2: 1}), 0.7: Counter({1: 2})},
        integrated_grid={0.5: Counter({1: 1}), 0.7: Counter({1: 1})},
        text_and_image=2,
        misaligned=1,
    )
    outcome = ShardOutcome(info.path, status, 4, ShardStats(5, 4, 0, Counter({"empty_caption": 1})))
    outcome.key_summary = KeySummary.of(f"{info.shard_id}-{i}" for i in range(4))
    hits = DataFile(f"part-x-{info.shard_id}.parquet", 1234, 1700000000000, 4)
    return ShardResult(info, outcome, tally, hits)


def test_tally_round_trips_through_json():
    tally = _result(SHARDS[0]).tally
    assert tally_from_dict(tally_to_dict(tally)) == tally


def test_a_new_run_records_markers_and_finish_removes_them(tmp_path):
    progress = RunProgress.open(str(tmp_path), "fp", "run-a", SHARDS, ended_runs=())
    assert progress.run_id == "run-a" and not progress.resumed
    progress.record(_result(SHARDS[0]))
    assert len(list((tmp_path / PROGRESS_DIR / "run-a" / "shards").iterdir())) == 1
    progress.finish()
    assert not (tmp_path / PROGRESS_DIR / "run-a").exists()


def test_an_unfinished_run_with_the_same_fingerprint_is_resumed(tmp_path):
    first = RunProgress.open(str(tmp_path), "fp", "run-a", SHARDS, ended_runs=())
    for info in SHARDS[:2]:
        first.record(_result(info))
    first.record(_result(SHARDS[2], SHARD_FAILED))

    again = RunProgress.open(str(tmp_path), "fp", "run-b", SHARDS, ended_runs=())
    assert again.run_id == "run-a" and again.started_at == first.started_at
    # Finished shards come back whole; the failed one is read again.
    assert again.finished == {r.info.path: r for r in map(_result, SHARDS[:2])}


def test_another_fingerprint_or_a_changed_shard_is_not_taken(tmp_path):
    first = RunProgress.open(str(tmp_path), "fp", "run-a", SHARDS, ended_runs=())
    for info in SHARDS:
        first.record(_result(info))
    other = RunProgress.open(str(tmp_path), "other-config", "run-b", SHARDS, ended_runs=())
    assert other.run_id == "run-b" and not other.resumed

    rewritten = [ShardInfo(SHARDS[0].path, 999, SHARDS[0].mtime, "new-etag"), *SHARDS[1:]]
    again = RunProgress.open(str(tmp_path), "fp", "run-c", rewritten, ended_runs=())
    assert again.run_id == "run-a"
    assert set(again.finished) == {s.path for s in SHARDS[1:]}


def test_a_cut_marker_means_the_shard_is_read_again(tmp_path):
    first = RunProgress.open(str(tmp_path), "fp", "run-a", SHARDS, ended_runs=())
    first.record(_result(SHARDS[0]))
    first.record(_result(SHARDS[1]))
    marker = tmp_path / PROGRESS_DIR / "run-a" / "shards" / f"{SHARDS[1].shard_id}.json"
    marker.write_bytes(marker.read_bytes()[:40])
    again = RunProgress.open(str(tmp_path), "fp", "run-b", SHARDS, ended_runs=())
    assert set(again.finished) == {SHARDS[0].path}


def test_markers_of_a_run_that_committed_are_removed_not_resumed(tmp_path):
    first = RunProgress.open(str(tmp_path), "fp", "run-a", SHARDS, ended_runs=())
    first.record(_result(SHARDS[0]))
    again = RunProgress.open(str(tmp_path), "fp", "run-b", SHARDS, ended_runs={"run-a"})
    assert again.run_id == "run-b" and not again.resumed
    assert not (tmp_path / PROGRESS_DIR / "run-a").exists()


def test_a_marker_keeps_the_key_summary_and_one_without_loads(tmp_path):
    result = _result(SHARDS[0])
    assert result.outcome.key_summary is not None
    assert ShardResult.from_json(result.to_json()) == result
    older = json.loads(result.to_json())
    del older["outcome"]["key_summary"]  # written before key summaries were kept
    assert ShardResult.from_json(json.dumps(older)).outcome.key_summary is None


def test_the_bar_counts_the_samples_of_shards_that_count_and_shows_failed_ones():
    out = io.StringIO()
    with RichProgress(Console(file=out, width=200)) as progress:
        progress.start(4, done=1)
        progress.shard_done(20)
        progress.shard_done(0, failed=True)
        progress.shard_done(25)
    # Not a terminal: the bar is drawn once, when it stops.
    assert " 4/4 shards (1 failed) 45 samples · " in out.getvalue()
