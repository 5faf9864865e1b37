"""Scheduled recount: keep an output current with its input. Meant for a cron-like trigger.

    python jobs/recount.py OUT [--input URI ...] [--full] [--retry-failed]
    ray job submit --address http://HEAD:8265 -- python jobs/recount.py s3://bucket/freqscan/laion

Idempotent: with no shard added, changed or removed since the output's current run it commits
nothing and says so; a shard that failed in that run and has not changed stays failed (counted
in ``shards_failed``) and is read again only with ``--retry-failed``. The last stdout line is
one JSON object a scheduler can alert on:
``{"status": "updated" | "unchanged" | "refused" | "failed", ...}``; the exit code is 0 for
updated and unchanged, 2 when the recount is refused (configuration changed, output busy or
missing), 1 when the run failed (more failed shards than allowed; nothing committed).
"""

from __future__ import annotations

import argparse
import os
import sys

from _status import run_job

from freqscan.recount import recount


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="The output to keep current (local path or s3://...).")
    parser.add_argument("--input", nargs="+", help="Shards now; default: the recorded input.")
    parser.add_argument("--full", action="store_true", help="Read every shard again.")
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="Read the shards that failed in the current run again, even if unchanged.",
    )
    args = parser.parse_args(argv)

    overrides: dict[str, object] = {}
    if os.environ.get("RAY_ADDRESS"):  # set by `ray job submit`
        overrides["runtime.address"] = os.environ["RAY_ADDRESS"]
    if args.input:
        overrides["source.input"] = tuple(args.input)

    def work() -> dict[str, object]:
        result = recount(args.out, overrides, full=args.full, retry_failed=args.retry_failed)
        plan, summary = result.plan, result.summary
        return {
            "status": "unchanged" if summary is None else "updated",
            "parent_run_id": plan.parent_run_id,
            "run_id": summary.run_id if summary else None,
            "added": len(plan.added),
            "changed": len(plan.changed),
            "removed": len(plan.removed),
            "unchanged": len(plan.unchanged),
            # Failed shards of the output's current version, the new one's when updated.
            "shards_failed": len(summary.failed_shards if summary else plan.failed),
        }

    return run_job("recount", work, out=args.out)


if __name__ == "__main__":
    sys.exit(main())
