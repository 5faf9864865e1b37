"""Per-shard completion markers of a run in progress, so that re-running a killed job resumes it.

Layout of ``OUT/_progress/<run_id>/``:

- ``run.json``: the run's fingerprint (a hash of everything that decides its counts) and when it
  started;
- ``shards/<shard_id>.json``: one per finished shard, written after the shard's hits file: the
  shard as it was listed (path, size, mtime, etag), its outcome, its counts and its files.

The directory is removed once the run's ``runs`` row is committed. One left behind belongs to a
run that died. A later run with the same fingerprint takes over its run id and its finished
shards whose listing is unchanged, and reads only the rest; a shard that failed is read again.
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
        fs, root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{PROGRESS_DIR}")
        unfinished = []
        for entry in sorted(fs.ls(root, detail=False)) if fs.isdir(root) else []:
            previous = entry.rstrip("/").rsplit("/", 1)[-1]
            if previous in ended_runs:
                fs.rm(entry, recursive=True)  # the run committed but died before cleaning up
                continue
            try:
                meta = json.loads(fs.cat_file(f"{entry}/run.json"))
            except (FileNotFoundError, ValueError):
                continue  # died before its run.json was complete: nothing of it can be trusted
            if meta["fingerprint"] == fingerprint:
                unfinished.append((meta["started_at"], previous))
            else:
                logger.warning(
                    "%s/%s: an unfinished run with another configuration; not resumed",
                    root,
                    previous,
                )
        if unfinished:
            started, previous = max(unfinished)
            listed = {s.path: s for s in shards}
            finished = {
                r.info.path: r
                for r in _read_markers(fs, f"{root}/{previous}/shards")
                if r.outcome.status == SHARD_OK and listed.get(r.info.path) == r.info
            }
            return cls(out, previous, datetime.fromisoformat(started), finished)
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
        fs, path = fsspec.core.url_to_fs(self._dir)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _run_dir(out: str, run_id: str) -> str:
    return f"{out.rstrip('/')}/{PROGRESS_DIR}/{run_id}"


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
