"""``freqscan gc OUT``: remove what no version of an output reads and no run can resume from.

A run that dies leaves its ``_progress`` folder and the data files it wrote for its finished
shards (``hits/``, ``caption_keys/``); a run that fails (more failed shards than allowed)
leaves its data files. Re-running a killed run's command resumes it from both, so they are kept
while it can be resumed, unless ``include_unfinished`` (that run then starts over). Removed:

- the progress folders of runs that ended (committed or failed) and of runs that died before
  their ``run.json`` was whole (nothing can resume them); with ``include_unfinished``, all;
- every file in a table's folder that no version in its Delta log references, except the data
  files a kept progress folder names. Every version's files stay, not only the latest's:
  ``history``, ``diff`` and ``query --version`` read older versions.

All under the output's writer lease, so it never races a running count; progress folders go
before data files, so a gc cut short never leaves a marker naming a removed file.
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec

from freqscan.runtime.pipeline import new_run_id
from freqscan.tables.lease import OutputLease
from freqscan.tables.progress import ProgressFolder, progress_folders
from freqscan.tables.schemas import TABLES
from freqscan.tables.store import OutputStore


@dataclass(frozen=True)
class Garbage:
    """One thing gc removes.

    Args:
        path: Its path or URL.
        size: Its bytes (a folder's: of the files in it).
        reason: Why nothing needs it.
    """

    path: str
    size: int
    reason: str


@dataclass(frozen=True)
class GcResult:
    """What gc removed (or, in a dry run, would remove).

    Args:
        out: The output directory.
        removed: What went, progress folders first.
        kept_unfinished: Runs that can still be resumed, whose progress and files were kept.
        dry_run: Nothing was removed.
    """

    out: str
    removed: list[Garbage]
    kept_unfinished: list[str]
    dry_run: bool

    @property
    def size(self) -> int:
        return sum(g.size for g in self.removed)


def collect_garbage(out: str, dry_run: bool = False, include_unfinished: bool = False) -> GcResult:
    """Remove what no version of ``out`` references and no unfinished run can resume from.

    Args:
        out: The output directory.
        dry_run: Only list what would be removed.
        include_unfinished: Also remove the progress (and data files) of runs that died and
            could be resumed by re-running their command.

    Raises:
        OutputError: ``out`` holds no output.
        OutputBusyError: A run is writing it (it holds the writer lease).
    """
    store = OutputStore(out)
    store.runs()  # refuses a directory with no output before the lease would create one
    with OutputLease.acquire(store.out, f"gc-{new_run_id()}") as lease:
        ended = {r["run_id"] for r in store.runs().to_pylist()}
        folders = progress_folders(store.out, ended)
        kept = [f for f in folders if f.resumable and not include_unfinished]
        garbage = [Garbage(f.url, f.size(), _why(f)) for f in folders if f not in kept]
        needed = {
            (table, data.path)
            for folder in kept
            for result in folder.results()
            for table, data in (("hits", result.hits), ("caption_keys", result.caption_keys))
            if data is not None
        }
        for name in TABLES:
            uri = store.table_uri(name)
            fs, root = fsspec.core.url_to_fs(uri)
            garbage += [
                Garbage(f"{uri}/{path}", fs.size(f"{root}/{path}"), "no version references it")
                for path in store.unreferenced_files(name)
                if (name, path) not in needed
            ]
        if not dry_run:
            lease.check()
            for item in garbage:
                fs, path = fsspec.core.url_to_fs(item.path)
                fs.rm(path, recursive=True)
    return GcResult(store.out, garbage, [f.run_id for f in kept], dry_run)


def _why(folder: ProgressFolder) -> str:
    if folder.ended:
        return f"progress of run {folder.run_id}, which ended"
    if folder.fingerprint is None:
        return f"progress of run {folder.run_id}, which died before it could be resumed"
    return f"progress of unfinished run {folder.run_id} (--include-unfinished)"
