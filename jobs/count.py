"""Count job: ``freqscan count`` for a scheduler, ending with one JSON status line.

    python jobs/count.py --config jobs/cc3m.yaml [any `freqscan count` flag, which wins]
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/count.py --config jobs/cc3m.yaml

Takes exactly the flags of ``freqscan count`` (parsed by the same code). The last stdout line is
``{"status": "succeeded" | "refused" | "failed", "run_id": ..., ...}``; exit code 0, 2 (bad flag
or config, missing input, output busy: nothing written) or 1 (more failed shards than
``--max-failed-shards``: nothing committed). Submitting the same command again resumes a killed
run from its finished shards.
"""

from __future__ import annotations

import sys

from _status import run_job

from freqscan.cli import parse_count_args
from freqscan.runtime.pipeline import run_count
from freqscan.runtime.progress import RichProgress
from freqscan.terminal import err


def count(argv: list[str]) -> dict[str, object]:
    config = parse_count_args(argv)
    with RichProgress(err) as progress:
        summary = run_count(config, progress)
    return {
        "status": "succeeded",
        "out": config.out,
        "dataset": config.dataset_name,
        "run_id": summary.run_id,
        "shards_total": summary.shards_total,
        "shards_failed": len(summary.failed_shards),
        "shards_reused": summary.shards_reused,
        "samples_read": summary.samples_read,
        "samples_counted": summary.samples_counted,
        "concepts_with_hits": summary.concepts_with_hits,
        "misalignment_degree": summary.misalignment_degree,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return run_job("count", lambda: count(args))


if __name__ == "__main__":
    sys.exit(main())
