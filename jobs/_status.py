"""The status line every job entry point ends with, and its exit code.

A scheduler (cron, KubeRay RayCronJob, Airflow) reads the last stdout line, one JSON object with
at least ``status``, ``job`` and ``seconds``, and the exit code: 0 done (``succeeded``,
``updated``, ``unchanged``), 2 ``refused`` (a user error: bad flag or config, missing input,
output busy; nothing was written), 1 ``failed`` (the run failed, or the job crashed).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable

from freqscan.errors import UserError
from freqscan.runtime.pipeline import RunFailedError

EXIT_CODES = {"refused": 2, "failed": 1}  # every other status is a success: 0


def run_job(name: str, work: Callable[[], dict[str, object]], **fields: object) -> int:
    """Run ``work``, print the job's status line and return its exit code.

    ``work`` returns the status fields (``status`` included); ``fields`` are known before it
    runs and stay in the line whatever happens. Exceptions become ``refused`` or ``failed``.
    """
    started = time.perf_counter()
    status: dict[str, object] = {"job": name, **fields}
    try:
        status |= work()
    except UserError as exc:
        status |= {"status": "refused", "error": str(exc)}
    except RunFailedError as exc:
        status |= {"status": "failed", "run_id": exc.summary.run_id, "error": str(exc)}
    except Exception as exc:  # a crash still ends with a line the scheduler can parse
        traceback.print_exc()
        status |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    status["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(status, sort_keys=True), flush=True)
    return EXIT_CODES.get(str(status["status"]), 0)
