"""Per-shard completion markers of a run in progress, so that re-running a killed job resumes it.

Layout of ``OUT/_progress/<run_id>/``:

- ``run.json``: the run's fingerprint (a hash of everything that decides its counts) and when it
  started;
- ``shards/<shard_id>.json``: one per finished shard, written after the shard's hits file: the
  shard as it was listed (path, size, mtime, etag), its outcome, its counts and its files.

The directory is removed once the run's ``runs`` row is committed. One left behind belongs to a
run that died. A later run with the same fingerprint takes over its run id and its finished
shards whose listing is unchanged, and reads only the rest; a shard that failed is read again.
``freqscan gc`` (:mod:`freqscan.garbage`) removes the folders no run can take over.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec

from freqscan.counting.shard import ShardOutcome
from freqscan.counting.tally import ShardTally, tally_from_dict, tally_to_dict
from freqscan.records import SHARD_OK, ShardInfo
from freqscan.tables.store import DataFile

logger = logging.getLogger(__name__)

PROGRESS_DIR = "_progress"


@dataclass(frozen=True)
class ShardResult:
    """A finished shard as the driver keeps it: no sample rows, only what the tables need.

    Args:
        info: The shard as listed.
        outcome: How reading it went.
        tally: Its counts (empty for a failed shard).
        hits: Its hits file, or ``None`` when it had no hits.
        caption_keys: Its caption keys file (written by its reader), or ``None`` for a failed
            shard or one counted before caption keys were kept.
    """

    info: ShardInfo
    outcome: ShardOutcome
    tally: ShardTally
    hits: DataFile | None
    caption_keys: DataFile | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "shard": asdict(self.info),
                "outcome": json.loads(self.outcome.to_json()),
                "tally": tally_to_dict(self.tally),
                "hits": asdict(self.hits) if self.hits else None,
                "caption_keys": asdict(self.caption_keys) if self.caption_keys else None,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ShardResult:
        d: dict[str, Any] = json.loads(text)
        return cls(
            ShardInfo(**d["shard"]),
            ShardOutcome.from_json(json.dumps(d["outcome"])),
            tally_from_dict(d["tally"]),
            DataFile(**d["hits"]) if d["hits"] else None,
            DataFile(**d["caption_keys"]) if d.get("caption_keys") else None,
        )


@dataclass(frozen=True)
class ProgressFolder:
    """One run's folder under ``OUT/_progress``.

    Args:
        url: The folder (the output's path or URL, then ``_progress/<run_id>``).
        run_id: The run it belongs to.
        fingerprint: The run's fingerprint; ``None`` when its ``run.json`` is missing or
            unreadable: the run died before writing it whole, and nothing of it can be trusted.
        started_at: When the run started (ISO 8601); ``None`` with the fingerprint.
        ended: The run is in the ``runs`` table (it committed, or failed): the folder is a
            leftover.
    """

    url: str
    run_id: str
    fingerprint: str | None
    started_at: str | None
    ended: bool

    @property
    def resumable(self) -> bool:
        """Whether a run with the same fingerprint would take it over."""
        return not self.ended and self.fingerprint is not None

    def results(self) -> list[ShardResult]:
        """The shards the run marked finished."""
        fs, path = fsspec.core.url_to_fs(f"{self.url}/shards")
        return _read_markers(fs, path)

    def size(self) -> int:
        """Bytes of the files in it."""
        fs, path = fsspec.core.url_to_fs(self.url)
        return fs.du(path) if fs.exists(path) else 0

    def remove(self) -> None:
        _remove(self.url)


def progress_folders(out: str, ended_runs: Collection[str]) -> list[ProgressFolder]:
    """The run folders under ``OUT/_progress``.

    Args:
        out: The output directory.
        ended_runs: Run ids in the ``runs`` table.
    """
    fs, root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{PROGRESS_DIR}")
    folders = []
    for entry in sorted(fs.ls(root, detail=False)) if fs.isdir(root) else []:
        run_id = entry.rstrip("/").rsplit("/", 1)[-1]
        try:
            meta = json.loads(fs.cat_file(f"{entry}/run.json"))
            fingerprint, started_at = meta["fingerprint"], meta["started_at"]
        except (FileNotFoundError, ValueError, KeyError):
            fingerprint = started_at = None
        ended = run_id in ended_runs
        folders.append(
            ProgressFolder(_run_dir(out, run_id), run_id, fingerprint, started_at, ended)
        )
    return folders


@dataclass
class RunProgress:
    """The markers of one run; see the module docstring.

    Args:
        out: The output directory (absolute path or URL).
        run_id: The run's id (a resumed run keeps the id of the run it resumes).
        started_at: When the run (or the run it resumes) started.
        finished: Shard path -> result, for shards a resumed run need not read again.
    """

    out: str
    run_id: str
    started_at: datetime
    finished: dict[str, ShardResult]

    @property
    def resumed(self) -> bool:
        return bool(self.finished)

    @property
    def _dir(self) -> str:
        return _run_dir(self.out, self.run_id)

    @classmethod
    def open(
        cls,
        out: str,
        fingerprint: str,
        run_id: str,
        shards: Sequence[ShardInfo],
        ended_runs: Collection[str],
    ) -> RunProgress:
        """Resume the unfinished run with this fingerprint, or start recording ``run_id``.

        Args:
            out: The output directory.
            fingerprint: Hash of what decides the run's counts.
            run_id: Id to use when there is nothing to resume.
            shards: The shards as listed now; a marker counts only if its shard is unchanged.
            ended_runs: Run ids already in the ``runs`` table (their markers are leftovers).
        """
        unfinished = []
        for folder in progress_folders(out, ended_runs):
            if folder.ended:
                folder.remove()  # the run committed but died before cleaning up
            elif folder.fingerprint == fingerprint:
                unfinished.append(folder)
            elif folder.fingerprint is not None:
                logger.warning(
                    "%s: an unfinished run with another configuration; not resumed", folder.url
                )
        if unfinished:
            previous = max(unfinished, key=lambda f: (f.started_at, f.run_id))
            listed = {s.path: s for s in shards}
            finished = {
                r.info.path: r
                for r in previous.results()
                if r.outcome.status == SHARD_OK and listed.get(r.info.path) == r.info
            }
            return cls(out, previous.run_id, datetime.fromisoformat(previous.started_at), finished)
        fs, root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{PROGRESS_DIR}")
        progress = cls(out, run_id, datetime.now(UTC), {})
        fs.makedirs(f"{root}/{run_id}/shards", exist_ok=True)
        meta = {"fingerprint": fingerprint, "started_at": progress.started_at.isoformat()}
        fs.pipe_file(f"{root}/{run_id}/run.json", json.dumps(meta).encode())
        return progress

    def record(self, result: ShardResult) -> None:
        """Mark a shard finished; call after its hits file is written."""
        fs, path = fsspec.core.url_to_fs(f"{self._dir}/shards/{result.info.shard_id}.json")
        fs.pipe_file(path, result.to_json().encode())

    def finish(self) -> None:
        """Remove the markers once the run's ``runs`` row is committed."""
        _remove(self._dir)


def _run_dir(out: str, run_id: str) -> str:
    return f"{out.rstrip('/')}/{PROGRESS_DIR}/{run_id}"


def _remove(url: str) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _read_markers(fs: fsspec.AbstractFileSystem, path: str) -> list[ShardResult]:
    if not fs.isdir(path):
        return []
    names = fs.ls(path, detail=False)
    if not names:
        return []
    results = []
    # One concurrent request batch on object stores, instead of a GET per shard in turn.
    for name, data in fs.cat(names, on_error="return").items():
        try:
            if isinstance(data, Exception):
                raise ValueError(str(data))
            results.append(ShardResult.from_json(data))
        except (ValueError, KeyError, TypeError):
            logger.warning("%s: unreadable marker (cut short when the run died?); redone", name)
    return results
