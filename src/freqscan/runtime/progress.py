"""Shard-level progress for the terminal: shards done (and failed), samples, samples/s."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RichProgress:
    """A :class:`freqscan.runtime.pipeline.Progress` drawn with rich; use as a context manager.

    Its samples are those the run reports as read by the shards it reads: a failed shard adds
    none (it adds none to the run's totals either) and is shown as failed instead.
    """

    def __init__(self, console: Console) -> None:
        self._bar = Progress(
            TextColumn("[bold]counting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards{task.fields[failed]}"),
            TextColumn("{task.fields[samples]:,} samples · {task.fields[rate]:,.0f} samples/s"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = None
        self._samples = 0
        self._failed = 0
        self._t0 = 0.0

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def start(self, shards: int, done: int = 0) -> None:
        self._t0 = time.perf_counter()
        self._task = self._bar.add_task(
            "count", total=shards, completed=done, samples=0, rate=0.0, failed=""
        )

    def shard_done(self, samples_read: int, failed: bool = False) -> None:
        self._samples += samples_read
        self._failed += failed
        rate = self._samples / max(time.perf_counter() - self._t0, 1e-9)
        self._bar.update(
            self._task,
            advance=1,
            samples=self._samples,
            rate=rate,
            failed=f" ({self._failed:,} failed)" if self._failed else "",
        )
