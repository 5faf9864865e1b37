"""The output directory: Delta Lake tables, written so readers never see a half-done run.

Layout of ``OUT/``: one Delta table per name in :data:`~freqscan.tables.schemas.TABLES`.

How a run becomes visible:

1. Workers write each shard's ``hits`` as a Parquet file straight into ``OUT/hits/`` under a name
   fixed by (run, shard), so a retried shard overwrites its own file and never adds a second one.
   Files no Delta commit references are invisible to every Delta reader.
2. At the end the driver commits ``hits`` (referencing those files), ``shard_counts``, ``shards``
   and ``frequencies``, each an atomic Delta commit that replaces the previous run's rows.
3. Last, it appends the run's row to ``runs`` with the Delta version of every table it
   committed. That row is what makes the run current: :meth:`OutputStore.snapshot` opens each
   table at the versions the latest succeeded run recorded, so a run that dies between commits
   leaves the previous run's consistent snapshot in place.
"""

from __future__ import annotations

import json
import os
import posixpath
import secrets
import time
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema, write_deltalake
from deltalake.transaction import AddAction, create_table_with_add_actions
from fsspec.implementations.local import LocalFileSystem

from freqscan.config import absolute_location
from freqscan.errors import UserError
from freqscan.storage import delta_storage_options
from freqscan.tables.schemas import RUNS, TABLES

RUN_SUCCEEDED = "succeeded"
# A run that broke its --max-failed-shards limit: recorded, nothing committed, never current.
RUN_FAILED = "failed"


class OutputError(UserError, RuntimeError):
    """The output directory does not hold what was asked for."""


@dataclass(frozen=True, slots=True)
class DataFile:
    """A Parquet file a worker wrote into a table's directory, not yet committed.

    Args:
        path: Path relative to the table root (what the Delta log records).
        size: Bytes.
        modification_time: Milliseconds since the epoch.
        num_rows: Rows in the file.
    """

    path: str
    size: int
    modification_time: int
    num_rows: int


def _missing_directories(path: str) -> list[str]:
    """``path`` and its ancestors that do not exist, deepest first."""
    missing = []
    while path and not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def write_data_file(out: str, table: str, filename: str, data: pa.Table) -> DataFile:
    """Write ``data`` as ``OUT/<table>/<filename>``; safe to call from a worker, idempotent."""
    uri = f"{absolute_location(out).rstrip('/')}/{table}/{filename}"
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(fs._parent(path), exist_ok=True)
    with fs.open(path, "wb") as fh:
        pq.write_table(data.cast(TABLES[table]), fh, compression="zstd")
    return DataFile(filename, fs.size(path), int(time.time() * 1000), data.num_rows)


class OutputStore:
    """Reads and commits the tables of one output directory.

    Args:
        out: Output directory, local path or fsspec URL.
    """

    def __init__(self, out: str) -> None:
        self.out = absolute_location(out)

    def table_uri(self, name: str) -> str:
        return f"{self.out.rstrip('/')}/{name}"

    def _table(self, name: str, version: int | None = None) -> DeltaTable:
        uri = self.table_uri(name)
        return DeltaTable(uri, version=version, storage_options=delta_storage_options(uri))

    def _is_table(self, name: str) -> bool:
        uri = self.table_uri(name)
        return DeltaTable.is_deltatable(uri, storage_options=delta_storage_options(uri))

    def exists(self) -> bool:
        return self._is_table("runs")

    def check_writable(self) -> None:
        """Refuse an output nothing can be written to, before any work starts.

        Writes and removes a probe file (creating the directory on a local disk), so that a
        read-only mount, a path under a file or a bucket without write access is refused at
        once rather than after the count.

        Raises:
            OutputError: The probe cannot be written.
        """
        fs, root = fsspec.core.url_to_fs(self.out)
        root = root.rstrip("/")
        probe = f"{root}/_write_check-{secrets.token_hex(4)}"
        # Object stores have no directories to make. Local ones made here are removed again:
        # a run refused later (a bad concept file) leaves no trace.
        made = []
        try:
            if isinstance(fs, LocalFileSystem):
                made = _missing_directories(root)
                fs.makedirs(root, exist_ok=True)
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
            for directory in made:
                os.rmdir(directory)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise OutputError(f"--out {self.out}: cannot write there ({reason})") from None

    def commit_files(self, name: str, files: list[DataFile]) -> int:
        """Make ``files`` the whole content of table ``name``; returns the new version."""
        uri = self.table_uri(name)
        schema = Schema.from_arrow(TABLES[name])
        if not files:
            return self.replace(name, TABLES[name].empty_table())
        actions = [
            AddAction(
                f.path,
                f.size,
                {},
                f.modification_time,
                True,
                json.dumps({"numRecords": f.num_rows}),
            )
            for f in files
        ]
        if self._is_table(name):
            self._table(name).create_write_transaction(actions, mode="overwrite", schema=schema)
        else:
            create_table_with_add_actions(
                uri, schema, actions, mode="error", storage_options=delta_storage_options(uri)
            )
        return self._table(name).version()

    def data_files(self, name: str, version: int) -> list[DataFile]:
        """The Parquet files table ``name`` consists of at ``version``."""
        actions = pa.table(self._table(name, version).get_add_actions(flatten=True))
        return [
            DataFile(a["path"], a["size_bytes"], a["modification_time"], a["num_records"])
            for a in actions.select(
                ["path", "size_bytes", "modification_time", "num_records"]
            ).to_pylist()
        ]

    def unreferenced_files(self, name: str) -> list[str]:
        """Files under table ``name`` that no version of it references, relative to its root:
        what a run that died, or failed, left uncommitted. Every file of every version in the
        log is referenced, not only the latest's, so older runs stay readable."""
        if not self._is_table(name):
            # No version yet (the first run writing it died or failed): none is referenced.
            # Hidden names are left alone, as vacuum leaves them (a half-made _delta_log).
            fs, root = fsspec.core.url_to_fs(self.table_uri(name))
            found = (posixpath.relpath(path, root) for path in fs.find(root))
            return [p for p in found if not any(part[0] in "_." for part in p.split("/"))]
        table = self._table(name)
        versions = [h["version"] for h in table.history()]
        # deltalake's vacuum, listing only: "full" lists every file the log does not mention,
        # retention 0 ignores the files' age, keep_versions keeps every version's files.
        return table.vacuum(
            retention_hours=0,
            dry_run=True,
            enforce_retention_duration=False,
            full=True,
            keep_versions=versions,
        )

    def replace(self, name: str, data: pa.Table) -> int:
        """Replace table ``name`` with ``data`` in one commit; returns the new version."""
        uri = self.table_uri(name)
        # schema_mode: an output written by an older freqscan takes the current columns.
        write_deltalake(
            uri,
            data.cast(TABLES[name]),
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=delta_storage_options(uri),
        )
        return self._table(name).version()

    def append_run(self, row: dict[str, Any]) -> None:
        """Append a run's record; this commit is what makes the run current."""
        uri = self.table_uri("runs")
        write_deltalake(
            uri,
            pa.Table.from_pylist([row], schema=RUNS),
            mode="append",
            schema_mode="merge",
            storage_options=delta_storage_options(uri),
        )

    def runs(self) -> pa.Table:
        if not self.exists():
            raise OutputError(f"{self.out}: no freqscan output here (no runs table)")
        # One thread: pyarrow's scanner threads can outlive a CLI that exits right after this
        # read and abort it (apache/arrow#34314).
        return self._table("runs").to_pyarrow_dataset().to_table(use_threads=False)

    def current_run(self, run_id: str | None = None) -> dict[str, Any]:
        """The record of run ``run_id``, or of the latest succeeded run."""
        rows = [r for r in self.runs().to_pylist() if r["status"] == RUN_SUCCEEDED]
        if run_id is not None:
            rows = [r for r in rows if r["run_id"] == run_id]
            if not rows:
                raise OutputError(f"{self.out}: no succeeded run with id {run_id!r}")
        if not rows:
            raise OutputError(f"{self.out}: no run has succeeded yet")
        return max(rows, key=lambda r: r["finished_at"])

    def snapshot(self, run_id: str | None = None) -> dict[str, pads.Dataset]:
        """Every table as a dataset, at the versions the given (or latest) run committed."""
        run = self.current_run(run_id)
        versions: dict[str, int] = json.loads(run["table_versions"])
        tables = {
            name: self._table(name, version).to_pyarrow_dataset()
            for name, version in versions.items()
        }
        tables["runs"] = self._table("runs").to_pyarrow_dataset()
        return tables
