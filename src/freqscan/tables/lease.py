"""The writer lease of an output directory: one run writes it at a time, with no lock server.

Layout of ``OUT/_lease/``:

- ``<gen:012d>.json``: generation ``gen`` of the lease: its holder (a run id), host, pid,
  ``acquired_at`` and ``heartbeat_at``. The highest generation is the current one; its holder
  rewrites it every ``ttl_s / 4`` while it runs.
- ``<gen:012d>.released``: written by the holder of ``gen`` when it is done.

The current generation is free when it was released, when its heartbeat is older than
``ttl_s``, or when it was taken on this machine by a process that no longer exists (a job killed
outright can be re-run at once). Taking it means creating generation ``gen + 1`` exclusively:
``O_EXCL``-style on local disks, a conditional PUT (``If-None-Match: *``) on S3, so of two
writers racing for one generation exactly one wins. The highest generation is never deleted
(otherwise two writers could both create the number after it); older ones are pruned.

Atomic on local disks and S3 (and S3-compatible stores that enforce ``If-None-Match``); another
fsspec store is only as safe as its support for exclusive create (``mode="xb"``). Heartbeats
are compared with the reader's clock, so hosts' clocks must agree to well within ``ttl_s``.
Lease files hold no credentials: only the run id and where it runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from types import TracebackType

import fsspec
from fsspec.implementations.local import LocalFileSystem

from freqscan.tables.store import OutputError

logger = logging.getLogger(__name__)

LEASE_DIR = "_lease"
_GENERATION = re.compile(r"^(\d{12})\.json$")
_NUMBERED = re.compile(r"^(\d{12})\.(?:json|released)$")


class OutputBusyError(OutputError):
    """Another run holds the output's writer lease."""


class LeaseLostError(OutputError):
    """Another run took the writer lease over: this run's heartbeat had gone stale."""


def _pid_namespace() -> str:
    # Same hostname is not the same process table (containers sharing the host's network):
    # the dead-pid rule applies only within one pid namespace.
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@dataclass(frozen=True, slots=True)
class _Generation:
    """One generation's file."""

    holder: str
    host: str
    pid: int
    pid_namespace: str
    acquired_at: str
    heartbeat_at: str

    def heartbeat_age(self) -> float:
        return (datetime.now(UTC) - datetime.fromisoformat(self.heartbeat_at)).total_seconds()

    def died_here(self) -> bool:
        """Held by a process of this machine that no longer exists."""
        here = self.host == socket.gethostname() and self.pid_namespace == _pid_namespace()
        return here and not _pid_alive(self.pid)

    def describe(self) -> str:
        return (
            f"run {self.holder} (host {self.host}, pid {self.pid}, "
            f"last heartbeat {self.heartbeat_age():.0f}s ago)"
        )

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()


def _now() -> str:
    return datetime.now(UTC).isoformat()


class _LeaseFiles:
    """The files of ``OUT/_lease``: list, read, create exclusively, overwrite, prune."""

    def __init__(self, out: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{LEASE_DIR}")
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            os.makedirs(self.root, exist_ok=True)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def names(self) -> set[str]:
        self.fs.invalidate_cache(self.root)  # s3fs caches listings; ours must be current
        try:
            return {p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)}
        except FileNotFoundError:
            return set()

    def top(self, names: set[str] | None = None) -> int:
        """The highest generation (-1: none yet), from ``names`` or a fresh listing."""
        names = self.names() if names is None else names
        return max((int(m[1]) for n in names if (m := _GENERATION.match(n))), default=-1)

    def read(self, gen: int) -> _Generation | None:
        """Generation ``gen``; ``None`` if it is gone or cannot be trusted."""
        try:
            data = json.loads(self.fs.cat_file(self.path(f"{gen:012d}.json")))
            return _Generation(**{f.name: data[f.name] for f in fields(_Generation)})
        except FileNotFoundError:
            return None  # pruned since the listing: a newer generation exists
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("%s: unreadable lease generation %d (%r); expired", self.root, gen, exc)
            return None

    def create(self, name: str, data: bytes) -> bool:
        """Create ``name`` holding ``data`` unless it exists; whether this call created it."""
        path = self.path(name)
        try:
            if self.local:
                # Written aside and hard-linked into place: the link fails if the name exists,
                # and no reader ever sees the file half written.
                tmp = self._write_aside(path, data)
                try:
                    os.link(tmp, path)
                finally:
                    os.unlink(tmp)
            else:
                with self.fs.open(path, "xb") as fh:  # s3fs: PUT with If-None-Match: *
                    fh.write(data)
        except FileExistsError:
            return False
        return True

    def overwrite(self, name: str, data: bytes) -> None:
        path = self.path(name)
        if self.local:
            os.replace(self._write_aside(path, data), path)  # readers see old or new, whole
        else:
            self.fs.pipe_file(path, data)  # a PUT replaces an object atomically

    def prune(self, names: set[str], below: int) -> None:
        """Remove the generations (and release markers) numbered below ``below``."""
        for name in sorted(n for n in names if (m := _NUMBERED.match(n)) and int(m[1]) < below):
            try:
                self.fs.rm_file(self.path(name))
            except FileNotFoundError:
                pass  # pruned by another writer already

    @staticmethod
    def _write_aside(path: str, data: bytes) -> str:
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        return tmp


class OutputLease:
    """The writer lease of one output directory, held by one run; see the module docstring.

    Made by :meth:`acquire`; a context manager (leaving it releases the lease).

    Attributes:
        out: The output directory.
        holder: The run holding the lease.
        gen: The generation it holds.
    """

    def __init__(
        self, files: _LeaseFiles, out: str, record: _Generation, gen: int, ttl_s: float
    ) -> None:
        self.out = out
        self.holder = record.holder
        self.gen = gen
        self._files = files
        self._record = record
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, args=(ttl_s / 4,), name=f"lease-{self.holder}", daemon=True
        )
        self._heartbeat.start()

    @classmethod
    def acquire(cls, out: str, holder: str, ttl_s: float = 120.0) -> OutputLease:
        """Take the writer lease of ``out`` for run ``holder``, and keep it alive until released.

        Args:
            out: The output directory (local path or fsspec URL).
            holder: The run id taking it.
            ttl_s: A heartbeat older than this frees the lease; the holder beats every ttl_s/4.

        Raises:
            OutputBusyError: Another run holds it (the message names that run and what to do).
        """
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, not {ttl_s}")
        files = _LeaseFiles(out)
        names = files.names()
        top = files.top(names)
        current = files.read(top) if top >= 0 else None
        if current is not None and not _is_free(current, f"{top:012d}.released" in names, ttl_s):
            raise _busy(out, current, ttl_s)
        now = _now()
        record = _Generation(holder, socket.gethostname(), os.getpid(), _pid_namespace(), now, now)
        gen = top + 1
        # A generation pruned after our listing could be created again: only the highest counts.
        if not files.create(f"{gen:012d}.json", record.to_bytes()) or files.top() > gen:
            winner = files.read(files.top())
            if winner is None:
                raise OutputBusyError(f"{out}: another run took the writer lease; try again")
            raise _busy(out, winner, ttl_s)
        files.prune(names, below=gen)
        return cls(files, out, record, gen, ttl_s)

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if another run has taken the lease over."""
        top = self._files.top()
        if top > self.gen:
            newer = self._files.read(top)
            by = newer.describe() if newer else "another run"
            raise LeaseLostError(
                f"{self.out}: run {self.holder} lost its writer lease to {by}: its heartbeat had "
                "gone stale (was it paused or cut off from the store?); it commits nothing more. "
                "Run it again once the other run is done."
            )

    def release(self) -> None:
        """Stop the heartbeat and mark the lease free; idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._heartbeat.join()
        released = {"holder": self.holder, "released_at": _now()}
        # Never empty: s3fs writes an empty file with a plain (unconditional) PUT.
        self._files.create(f"{self.gen:012d}.released", json.dumps(released).encode())

    def __enter__(self) -> OutputLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _beat(self, period_s: float) -> None:
        name = f"{self.gen:012d}.json"
        while not self._stop.wait(period_s):
            self._record = replace(self._record, heartbeat_at=_now())
            try:
                self._files.overwrite(name, self._record.to_bytes())
            except Exception as exc:  # a store hiccup must not end the heartbeat for good
                logger.warning("%s: lease heartbeat failed: %s", self.out, exc)


def _is_free(current: _Generation, released: bool, ttl_s: float) -> bool:
    return released or current.heartbeat_age() > ttl_s or current.died_here()


def _busy(out: str, current: _Generation, ttl_s: float) -> OutputBusyError:
    return OutputBusyError(
        f"{out} is being written by {current.describe()}. Wait for it to finish, or write to "
        f"another --out. If that run is dead, its lease lapses {ttl_s:.0f}s after its last "
        "heartbeat (at once when it ran on this machine); then run again."
    )
