"""Versions of an output: its runs in order, and how counts moved between two of them.

Every succeeded run (count, rethreshold, recount) is a version of the output: its ``runs`` row
records the Delta version of every table it committed, so the output can be reopened as of any
run (:meth:`~freqscan.tables.store.OutputStore.snapshot`). Versions are numbered 1..n in the
order they became current (``finished_at``, the order ``OutputStore.current_run`` uses). A
failed run committed nothing: it is listed but never numbered, so the numbers users type stay
valid as the output grows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from freqscan.names import COUNT_COLUMNS, LATEST, PREVIOUS
from freqscan.storage import delta_storage_options
from freqscan.tables.store import RUN_FAILED, RUN_SUCCEEDED, OutputError, OutputStore

HISTORY = pa.schema(
    [
        ("version", pa.int64()),
        ("run_id", pa.string()),
        ("status", pa.string()),
        ("kind", pa.string()),
        ("parent_run_id", pa.string()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("dataset", pa.string()),
        ("input", pa.string()),
        ("shards_total", pa.int64()),
        ("shards_ok", pa.int64()),
        ("shards_failed", pa.int64()),
        ("samples_counted", pa.int64()),
        ("text_hits", pa.int64()),
        ("concepts_with_hits", pa.int64()),
        ("tagger", pa.string()),
        ("image_threshold", pa.float64()),
        ("image_hits", pa.int64()),
        ("integrated_hits", pa.int64()),
        ("misalignment_degree", pa.float64()),
    ]
)

DIFF = pa.schema(
    [
        ("concept_id", pa.int64()),
        ("concept", pa.string()),
        # changed (in both versions), new (only in the newer), removed (only in the older).
        ("status", pa.string()),
        ("old", pa.int64()),
        ("new", pa.int64()),
        ("change", pa.int64()),
        # change / old; NULL when the concept had no hits (or did not exist) before.
        ("relative_change", pa.float64()),
    ]
)


@dataclass(frozen=True, slots=True)
class Version:
    """One succeeded run, numbered as ``freqscan history`` lists it.

    Args:
        number: 1 for the oldest version.
        run: The run's row of the ``runs`` table.
    """

    number: int
    run: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.run["run_id"]

    @property
    def tagged(self) -> bool:
        return self.run.get("tagger") is not None

    def describe(self) -> str:
        return (
            f"v{self.number} (run {self.run_id}, {self.run['dataset']}, "
            f"{self.run['samples_counted']:,} samples)"
        )


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """How one count column moved from version ``old`` to version ``new``.

    Args:
        old: The older side (``--from``).
        new: The newer side (``--to``).
        column: The compared column (``text_count``...).
        changes: Rows of :data:`DIFF`, largest absolute change first (the top N if limited).
        changed: Concepts in both versions whose count moved.
        added: Concepts only in ``new``.
        removed: Concepts only in ``old``.
    """

    old: Version
    new: Version
    column: str
    changes: pa.Table
    changed: int
    added: int
    removed: int


def _runs_in_order(store: OutputStore) -> list[dict[str, Any]]:
    # Stable sort: rows with equal finished_at keep the table's (commit) order.
    return sorted(store.runs().to_pylist(), key=lambda r: r["finished_at"])


def _versions(store: OutputStore) -> list[Version]:
    runs = [r for r in _runs_in_order(store) if r["status"] == RUN_SUCCEEDED]
    if not runs:
        raise OutputError(f"{store.out}: no run has succeeded yet")
    return [Version(i, run) for i, run in enumerate(runs, start=1)]


def _resolve(store: OutputStore, versions: list[Version], ref: str) -> Version:
    word = ref.strip().lower()
    if word == LATEST:
        return versions[-1]
    if word == PREVIOUS:
        if len(versions) < 2:
            raise OutputError(f"{store.out}: there is no previous version, only v1")
        return versions[-2]
    number = re.fullmatch(r"v?(\d+)", word)
    if number:
        n = int(number.group(1))
        if not 1 <= n <= len(versions):
            raise OutputError(
                f"{store.out}: no version {n}; versions are 1..{len(versions)} "
                "(see `freqscan history`)"
            )
        return versions[n - 1]
    for version in versions:
        if version.run_id == ref:
            return version
    if any(r["run_id"] == ref and r["status"] == RUN_FAILED for r in store.runs().to_pylist()):
        raise OutputError(f"{store.out}: run {ref} failed and committed nothing; not a version")
    raise OutputError(
        f"{store.out}: {ref!r} is no version number, run id, {LATEST!r} or {PREVIOUS!r} "
        "(see `freqscan history`)"
    )


def resolve_version(out: str, ref: str) -> Version:
    """The version ``ref`` names: a number (``3`` or ``v3``), a run id, ``latest`` or ``previous``.

    Raises:
        OutputError: No output at ``out``, or no such version (a failed run is none).
    """
    store = OutputStore(out)
    return _resolve(store, _versions(store), ref)


class _Frequencies:
    """The ``frequencies`` table, reloaded at the version each run committed (one log read)."""

    def __init__(self, store: OutputStore) -> None:
        uri = store.table_uri("frequencies")
        self._table = DeltaTable(uri, storage_options=delta_storage_options(uri))

    def at(self, run: dict[str, Any], columns: list[str]) -> pa.Table:
        self._table.load_as_version(json.loads(run["table_versions"])["frequencies"])
        # On the calling thread: pyarrow's scanner threads can outlive a short CLI command and
        # abort it at exit (apache/arrow#34314).
        return self._table.to_pyarrow_dataset().to_table(columns=columns, use_threads=False)


def output_history(out: str) -> pa.Table:
    """Every run of ``out`` oldest first as rows of :data:`HISTORY`; failed runs unnumbered.

    Image and integrated hit totals are summed from the version's ``frequencies`` (tagged runs
    only); the other totals are the run's own record.
    """
    store = OutputStore(out)
    runs = _runs_in_order(store)
    frequencies = _Frequencies(store) if any(r.get("tagger") for r in runs) else None
    rows = []
    number = 0
    for run in runs:
        succeeded = run["status"] == RUN_SUCCEEDED
        number += succeeded
        image_hits = integrated_hits = None
        if succeeded and frequencies is not None and run.get("tagger") is not None:
            counts = frequencies.at(run, ["image_count", "integrated_count"])
            image_hits = pc.sum(counts["image_count"]).as_py() or 0
            integrated_hits = pc.sum(counts["integrated_count"]).as_py() or 0
        rows.append(
            {name: run.get(name) for name in HISTORY.names}
            | {
                "version": number if succeeded else None,
                "kind": run.get("kind") or "count",  # outputs older than `kind` only counted
                "image_hits": image_hits,
                "integrated_hits": integrated_hits,
            }
        )
    return pa.Table.from_pylist(rows, schema=HISTORY)


def diff_versions(
    out: str,
    old: str = PREVIOUS,
    new: str = LATEST,
    by: str = "text",
    top: int | None = None,
) -> VersionDiff:
    """Which concepts' counts moved most from version ``old`` to version ``new``.

    Concepts are matched by id (derived from the name, so stable across concept sets); one
    present in only one version is ``new`` or ``removed``, its missing count taken as 0.

    Args:
        out: The output directory.
        old: The older version (see :func:`resolve_version`).
        new: The newer version.
        by: ``text``, ``image`` or ``integrated``: the count compared.
        top: Keep the N largest changes; all by default.

    Raises:
        OutputError: No such version, or ``by`` is an image count and a version tagged no
            images.
    """
    if by not in COUNT_COLUMNS:
        raise OutputError(f"--by {by!r}: choose one of {', '.join(COUNT_COLUMNS)}")
    column = COUNT_COLUMNS[by]
    store = OutputStore(out)
    versions = _versions(store)
    sides = _resolve(store, versions, old), _resolve(store, versions, new)
    frequencies = _Frequencies(store)
    counts = []
    for side in sides:
        if by != "text" and not side.tagged:
            raise OutputError(
                f"{side.describe()} tagged no images: --by {by} compares tagged versions only"
            )
        table = frequencies.at(side.run, ["concept_id", "concept", column])
        counts.append({r["concept_id"]: r for r in table.to_pylist()})
    before, after = counts
    rows = []
    for concept_id in before.keys() | after.keys():
        was, now = before.get(concept_id), after.get(concept_id)
        old_n = was[column] if was else None
        new_n = now[column] if now else None
        change = (new_n or 0) - (old_n or 0)
        if was and now and change == 0:
            continue
        rows.append(
            {
                "concept_id": concept_id,
                "concept": (now or was)["concept"],
                "status": "changed" if was and now else "new" if now else "removed",
                "old": old_n,
                "new": new_n,
                "change": change,
                "relative_change": change / old_n if old_n else None,
            }
        )
    rows.sort(key=lambda r: (-abs(r["change"]), r["concept"]))
    statuses = [r["status"] for r in rows]
    return VersionDiff(
        old=sides[0],
        new=sides[1],
        column=column,
        changes=pa.Table.from_pylist(rows[:top], schema=DIFF),
        changed=statuses.count("changed"),
        added=statuses.count("new"),
        removed=statuses.count("removed"),
    )
