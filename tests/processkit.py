"""Find and kill processes through /proc, for tests that kill jobs and Ray workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def kill_session(job: subprocess.Popen) -> None:
    """SIGKILL the job and every process of its session (its in-process Ray included)."""
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    deadline = time.monotonic() + 60
    while pids := _session_pids(job.pid):
        for pid in pids:  # a Ray process that moved to its own process group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert time.monotonic() < deadline, f"processes of the killed job survive: {pids}"
        time.sleep(0.2)


def processes() -> list[tuple[int, list[str], str]]:
    """(pid, /proc stat fields after the command name, command line) of every live process."""
    procs = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            # After the command's ")": state, ppid, pgrp, session, ...
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] != "Z":  # zombies are already dead
            procs.append((int(proc.name), stat, cmd))
    return procs


def _session_pids(session: int) -> list[int]:
    return [pid for pid, stat, _ in processes() if int(stat[3]) == session]
