"""Scheduled recount: keep an output current with its input. Meant for a cron-like trigger.

    python jobs/recount.py OUT [--input URI ...] [--full]
    ray job submit --address http://HEAD:8265 -- python jobs/recount.py s3://bucket/freqscan/laion

Idempotent: with no shard added, changed or removed since the output's current run it commits
nothing and says so. The last stdout line is one JSON object a scheduler can alert on:
``{"status": "updated" | "unchanged" | "refused" | "failed", ...}``; the exit code is 0 for
updated and unchanged, 2 when the recount is refused (configuration changed, output busy or
missing), 1 when the run failed (more failed shards than allowed; nothing committed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from freqscan.cli import USER_ERRORS
from freqscan.recount import recount
from freqscan.runtime.pipeline import RunFailedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="The output to keep current (local path or s3://...).")
    parser.add_argument("--input", nargs="+", help="Shards now; default: the recorded input.")
    parser.add_argument("--full", action="store_true", help="Read every shard again.")
    args = parser.parse_args(argv)

    overrides: dict[str, object] = {}
    if os.environ.get("RAY_ADDRESS"):  # set by `ray job submit`
        overrides["runtime.address"] = os.environ["RAY_ADDRESS"]
    if args.input:
        overrides["source.input"] = tuple(args.input)
    t0 = time.perf_counter()
    status: dict[str, object] = {"out": args.out}
    try:
        result = recount(args.out, overrides, full=args.full)
    except USER_ERRORS as exc:
        status |= {"status": "refused", "error": str(exc)}
        code = 2
    except RunFailedError as exc:
        status |= {"status": "failed", "run_id": exc.summary.run_id, "error": str(exc)}
        code = 1
    else:
        plan = result.plan
        status |= {
            "status": "unchanged" if result.summary is None else "updated",
            "parent_run_id": plan.parent_run_id,
            "run_id": result.summary.run_id if result.summary else None,
            "added": len(plan.added),
            "changed": len(plan.changed),
            "removed": len(plan.removed),
            "unchanged": len(plan.unchanged),
        }
        code = 0
    status["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(status, sort_keys=True))
    return code


if __name__ == "__main__":
    sys.exit(main())
