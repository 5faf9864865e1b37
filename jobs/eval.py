"""Evaluation job: ``freqscan eval ...`` for a scheduler, ending with one JSON status line.

    python jobs/eval.py loglinear --counts s3://bucket/freqscan/cc3m --performance results/
    ray job submit --address http://HEAD:8265 -- python jobs/eval.py longtail --counts OUT

Takes exactly the arguments of ``freqscan eval`` (its sub-command first) and runs that command
in-process, so its tables and files are the same. The last stdout line is
``{"status": "succeeded" | "refused" | "failed", "command": ..., ...}``; exit code 0, 2 (a
user error: bad arguments, a missing or unreadable input) or 1 (the job crashed).
"""

from __future__ import annotations

import sys
from contextlib import redirect_stderr
from typing import TextIO

import typer
from _status import run_job

from freqscan.evaluation.cli import eval_app

ERROR_PREFIX = "error:"  # how freqscan prints a user error on stderr


class ErrorTap:
    """Passes stderr through, keeping the last ``error:`` line for the status line."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.error: str | None = None

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.startswith(ERROR_PREFIX):
                self.error = line.removeprefix(ERROR_PREFIX).strip()
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False


def evaluate(argv: list[str]) -> dict[str, object]:
    tap = ErrorTap(sys.stderr)
    try:
        with redirect_stderr(tap):
            code = eval_app(argv, prog_name="freqscan eval", standalone_mode=False)
    except typer.TyperException as exc:  # bad arguments: the CLI's usage error
        return {"status": "refused", "error": exc.format_message()}
    if not code:  # None (the command returned) or 0
        return {"status": "succeeded"}
    return {
        "status": "refused" if code == 2 else "failed",
        "error": tap.error or f"freqscan eval exited with code {code}",
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return run_job("eval", lambda: evaluate(args), command=args[0] if args else None)


if __name__ == "__main__":
    sys.exit(main())
