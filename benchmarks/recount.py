"""Recount cost after 1% of the shards changed, as a ratio to a full count, in one run.

The 10,000 bundled LAION captions are split into 100 caption-parquet shards of 100. In one
process, after a warm-up count that pays for Ray worker start and imports:
  * a full count of the 100 shards,
  * one shard rewritten (1%), then ``recount`` (reads that shard, takes the other 99 over),
  * ``recount`` again with nothing changed (lists, compares, commits nothing),
  * a fresh full count of the changed input, whose tables the recount must equal.

    .venv/bin/python benchmarks/recount.py [--shards 100] [--json results.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from freqscan.config import CountConfig, RuntimeConfig, SourceConfig, TextConfig
from freqscan.recount import recount
from freqscan.runtime.pipeline import run_count

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from benchkit import emit, sample_shards, timed  # noqa: E402
from tablekit import comparable_tables  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--json", help="Also write the results here.")
    args = parser.parse_args()

    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = sample_shards(root / "shards", args.shards)

        def config(out: str) -> CountConfig:
            return CountConfig(
                source=SourceConfig(input=(str(root / "shards"),)),
                out=str(root / out),
                dataset_name="laion-sample",
                text=TextConfig(),
                runtime=RuntimeConfig(),
            )

        run_count(config("warm-up"))
        _, full = timed(lambda: run_count(config("out")))
        # Rewrite 1% of the shards: other rows, so the counts really change.
        changed = max(1, args.shards // 100)
        for i in range(changed):
            pq.write_table(
                rows.slice(i * 7, len(rows) // args.shards),
                root / "shards" / f"part-{i:05d}.parquet",
            )
        result, incremental = timed(lambda: recount(str(root / "out")))
        again, unchanged = timed(lambda: recount(str(root / "out")))
        _, fresh = timed(lambda: run_count(config("fresh")))
        assert result.summary is not None and len(result.plan.to_read) == changed
        assert again.summary is None and again.plan.nothing_to_do
        assert comparable_tables(str(root / "out")) == comparable_tables(str(root / "fresh"))

    results = {
        "shards": args.shards,
        "changed_shards": changed,
        "full_count_s": round(full, 2),
        "recount_s": round(incremental, 2),
        "recount_nothing_changed_s": round(unchanged, 2),
        "fresh_count_of_changed_input_s": round(fresh, 2),
        "recount_over_full": round(incremental / full, 3),
        "tables_equal_fresh_count": True,
    }
    emit(results, args.json)


if __name__ == "__main__":
    main()
