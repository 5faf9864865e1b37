"""Keep Ray's known-harmless native log lines off the user's terminal.

Ray's C++ core worker writes its errors straight to file descriptor 2, past Python's logging.
Every Ray Data actor pool makes it print one such line per actor, ``core_worker.cc ... has
constructor arguments in the object store and max_restarts > 0 ... the actor restart will fail``
(ray-project/ray#57733): Ray Data itself puts each operator's transformer in the object store,
whatever freqscan passes, and turning restarts off would give up the actor fault tolerance the
job relies on. So while Ray runs, descriptor 2 goes through a pipe that drops exactly those lines
and passes every other byte on; Python's own ``sys.stderr`` (the progress bar) keeps writing to
the terminal directly.
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The one line dropped; anything else Ray writes still shows.
HARMLESS = re.compile(
    rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object "
    rb"store and max_restarts > 0"
)


@contextmanager
def harmless_ray_lines_dropped() -> Iterator[None]:
    """Filter file descriptor 2 for :data:`HARMLESS` lines until the block ends."""
    try:
        terminal = os.dup(2)
    except OSError:  # no descriptor 2 at all: nothing to filter
        yield
        return
    python_stderr = sys.stderr
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    # Python's writes bypass the filter: a progress bar redraws without newlines.
    if _writes_to_fd2(python_stderr):
        sys.stderr = io.TextIOWrapper(
            os.fdopen(os.dup(terminal), "wb", buffering=0), write_through=True
        )
    pump = threading.Thread(target=_pump, args=(read_end, terminal), daemon=True)
    pump.start()
    try:
        yield
    finally:
        if sys.stderr is not python_stderr:
            sys.stderr.flush()
            sys.stderr = python_stderr
        os.dup2(terminal, 2)  # closes our write end of the pipe: the pump reads to its end
        # Processes Ray started meanwhile may still hold the pipe; do not wait for them.
        pump.join(timeout=2.0)


def _writes_to_fd2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # a test's buffer, a closed stream
        return False


def _pump(read_end: int, terminal: int) -> None:
    """Copy the pipe to the terminal line by line, without the harmless lines."""
    try:
        with open(read_end, "rb") as pipe:
            for line in pipe:
                if not HARMLESS.search(line):
                    os.write(terminal, line)
    finally:
        os.close(terminal)
