"""Count new concepts without parsing captions again: ``freqscan add-concepts DIR FILE``.

A count keeps every counted sample's caption keys (the ``caption_keys`` table: what the spaCy
parse of its caption offers concepts to match, :class:`~freqscan.text.keys.CaptionKeys`). A new
concept's text count follows from those keys alone, given the concept's terms are lemmatized by
the same spaCy pipeline the captions were parsed with: the new concepts are matched against the
stored keys one shard file at a time (memory bounded by one shard), tallied like a count tallies,
and committed as a new run (``kind = add-concepts``) whose ``frequencies`` and ``shard_counts``
are the parent's rows plus the new concepts' rows, exactly what a count with both concept sets
gives. ``hits`` and ``caption_keys`` are the parent's: ``hits`` lists no sample for the new
concepts (no example captions in ``freqscan show``).

A tagged run's new concepts also need image scores, which only the images give: by default the
shards are read again for their images alone and tagged with the enlarged concept set (the GPU
stage) while each sample's text side comes from its stored keys (no spaCy parse), through the
count pipeline itself (:func:`freqscan.runtime.pipeline.execute`, resumable like a count), so
every table equals a fresh count's with the enlarged set, ``hits`` included. The input must be
unchanged since the run (else ``freqscan recount`` first). ``--text-only`` skips the images: the
new concepts' image and integrated counts are then NULL.

The enlarged concept set is written to ``OUT/_concepts/<sha256 of the file>.json`` and recorded
as the run's concept file (``config.concepts``, ``runs.concept_set``), so ``freqscan recount DIR``
counts with it and recognises the run's configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads

from freqscan.concepts import Concept, ConceptSet, ConceptSetError, load_concepts
from freqscan.config import CountConfig
from freqscan.counting.tally import ShardTally, tally
from freqscan.fingerprint import with_concepts
from freqscan.records import SHARD_OK
from freqscan.recount import plan_recount, previous_results
from freqscan.runtime.pipeline import (
    Progress,
    Reuse,
    RunSummary,
    execute,
    new_run_id,
    plan_run,
    run_concepts,
)
from freqscan.tables.build import frequencies_table, merge, shard_counts_table
from freqscan.tables.lease import OutputLease
from freqscan.tables.schemas import FREQUENCY_COUNT_COLUMNS, SHARDS
from freqscan.tables.store import OutputError, OutputStore
from freqscan.text.keys import CaptionKeys
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.pipeline import SpacyPipelineError, load_pipeline, pipeline_info
from freqscan.text.searcher import pipeline_differences

KIND = "add-concepts"
CONCEPTS_DIR = "_concepts"


class AddConceptsRefusedError(OutputError):
    """The run cannot answer new concepts from what it stored."""


@dataclass
class AddConceptsSummary:
    """What ``add-concepts`` found and, unless nothing was new, the run it committed.

    Args:
        out: The output directory.
        parent_run_id: The run the concepts were added to.
        run_id: The new run, or ``None`` when no concept was new (nothing committed).
        added: The new concepts' names and text counts, in file order.
        already_counted: Concepts of the file the parent run already counts (skipped).
        concept_file: The enlarged concept set's file, recorded as the new run's concepts.
        concepts: Concepts of the new run.
        shards: Shard files of caption keys matched.
        samples: Samples (caption keys) matched.
        tagged: The parent tagged images.
        images: The new concepts' images were tagged (the shards read again); otherwise a tagged
            run's new concepts have NULL image counts.
        run: The summary of the tagging run, when ``images``.
        seconds: Wall time.
    """

    out: str
    parent_run_id: str
    run_id: str | None
    added: list[tuple[str, int]]
    already_counted: list[str]
    concept_file: str | None = None
    concepts: int = 0
    shards: int = 0
    samples: int = 0
    tagged: bool = False
    images: bool = False
    run: RunSummary | None = None
    seconds: float = 0.0


def add_concepts(
    out: str,
    concepts_file: str,
    progress: Progress | None = None,
    text_only: bool = False,
    address: str | None = None,
) -> AddConceptsSummary:
    """Count the concepts of ``concepts_file`` the current run lacks, from its caption keys.

    Args:
        out: The output directory.
        concepts_file: Concept file (txt, csv or json); concepts the run counts are skipped.
        progress: Optional progress reporter (one step per shard).
        text_only: In a tagged run, do not tag the images: the new concepts' image counts are
            NULL. A captions-only run reads no shard either way.
        address: Ray cluster address for tagging; ``None`` starts Ray in-process.

    Raises:
        ConceptSetError: The concept file cannot be loaded.
        AddConceptsRefusedError: The run kept no caption keys, its concepts cannot be extended,
            or (tagging) its input changed since.
        SpacyPipelineError: The installed spaCy pipeline is not the one the run parsed with.
        OutputBusyError: Another run is writing the output (it holds the writer lease).
        RunFailedError: Tagging: a shard the run counted could not be read again.
    """
    t0 = time.perf_counter()
    wanted = load_concepts(concepts_file)
    store = OutputStore(out)
    parent = store.current_run()  # refuses a directory with no output
    config = CountConfig.from_dict(json.loads(parent["config"]))
    if config.image is not None and not text_only:
        # The count pipeline holds the lease; it checks the parent is still current under it.
        summary = _add(store, parent, wanted, progress, lease=None, address=address)
    else:
        # Held from reading the parent until the new run's row is in: no other run writes between.
        with OutputLease.acquire(store.out, new_run_id()) as lease:
            summary = _add(store, store.current_run(), wanted, progress, lease=lease)
    summary.seconds = time.perf_counter() - t0
    return summary


def _add(
    store: OutputStore,
    parent: dict[str, Any],
    wanted: ConceptSet,
    progress: Progress | None,
    lease: OutputLease | None,
    address: str | None = None,
) -> AddConceptsSummary:
    """Add the new concepts: from the keys alone under ``lease``, else by tagging."""
    config = CountConfig.from_dict(json.loads(parent["config"]))
    snapshot = store.snapshot(parent["run_id"])
    counted = _counted_concepts(config, parent, snapshot["frequencies"].to_table())
    known = {c.name for c in counted}
    summary = AddConceptsSummary(
        out=store.out,
        parent_run_id=parent["run_id"],
        run_id=None,
        added=[],
        already_counted=[c.name for c in wanted if c.name in known],
        tagged=config.image is not None,
    )
    fresh = tuple(c for c in wanted if c.name not in known)
    if not fresh:
        return summary
    _check_caption_keys(store, parent)
    adding = _Adding(
        store, parent, config, snapshot, counted, ConceptSet(fresh, wanted.source), progress
    )
    if lease is None:
        return _add_by_tagging(adding, summary, address)
    return _add_from_keys(adding, lease, summary)


@dataclass(frozen=True)
class _Adding:
    """What both ways of adding concepts start from: the parent run as read, and the concepts.

    Args:
        store: The output.
        parent: The current run's ``runs`` row.
        config: Its configuration.
        snapshot: Its tables.
        counted: Its concepts.
        new: The concepts to add.
        progress: Optional progress reporter.
    """

    store: OutputStore
    parent: dict[str, Any]
    config: CountConfig
    snapshot: dict[str, pads.Dataset]
    counted: ConceptSet
    new: ConceptSet
    progress: Progress | None

    def done(
        self,
        summary: AddConceptsSummary,
        run_id: str,
        text: Callable[[Concept], int],
        enlarged: ConceptSet,
        shards: int,
        samples: int,
    ) -> AddConceptsSummary:
        """``summary`` completed with the committed run."""
        summary.run_id = run_id
        summary.added = [(c.name, text(c)) for c in self.new]
        summary.concept_file = enlarged.source
        summary.concepts = len(enlarged)
        summary.shards = shards
        summary.samples = samples
        return summary


def _check_pipeline(parent: dict[str, Any], installed: dict[str, str]) -> None:
    if differs := pipeline_differences(json.loads(parent["versions"]), installed):
        raise SpacyPipelineError(
            f"run {parent['run_id']} parsed its captions with another spaCy pipeline than the "
            f"installed one ({', '.join(differs)}); the new concepts' terms must be lemmatized "
            "by the same pipeline: install it, or count again"
        )


def _add_by_tagging(
    adding: _Adding, summary: AddConceptsSummary, address: str | None
) -> AddConceptsSummary:
    """Count the enlarged set with the count pipeline: images tagged, captions from their keys.

    The shards the run failed stay failed (a fresh count fails them too) and are not read; any
    other shard that fails now fails the run, so no shard's counts are lost.
    """
    store, parent, config = adding.store, adding.parent, adding.config
    enlarged = _write_concepts((*adding.counted, *adding.new), store.out)
    plan = plan_run(
        dataclasses.replace(
            config,
            out=store.out,  # the recorded one may be a copy's original
            concepts=enlarged.source,
            max_failed_shards=parent["shards_failed"],
            runtime=dataclasses.replace(config.runtime, address=address),
        )
    )
    _check_pipeline(parent, plan.spacy_info)
    rows = adding.snapshot["shards"].to_table().to_pylist()
    # Whether a shard changed is what matters here, not whether the run failed it.
    moved = plan_recount([r | {"status": SHARD_OK} for r in rows], plan.shards, parent)
    if not moved.nothing_to_do:
        raise AddConceptsRefusedError(
            f"the input changed since run {parent['run_id']} ({len(moved.added)} shards added, "
            f"{len(moved.changed)} changed, {len(moved.removed)} removed): its stored caption "
            "keys no longer describe it; `freqscan recount` first, then add the concepts"
        )
    before = previous_results(store, parent, plan.shards, grid=())
    keys_dir = store.table_uri("caption_keys")
    plan = dataclasses.replace(
        plan,
        stored_keys={
            path: f"{keys_dir}/{r.caption_keys.path}"
            for path, r in before.items()
            if r.caption_keys is not None
        },
    )

    def failed_before(held: OutputStore) -> Reuse:
        if held.current_run()["run_id"] != parent["run_id"]:
            raise OutputError(
                f"another run committed to {held.out} since run {parent['run_id']} was read; "
                "add the concepts again"
            )
        return Reuse(
            parent["run_id"],
            {p: r for p, r in before.items() if r.outcome.status != SHARD_OK},
        )

    run = execute(plan, progress=adding.progress, reuse=failed_before, kind=KIND)
    frequencies = store.snapshot(run.run_id)["frequencies"].to_table().to_pylist()
    text = {r["concept"]: r["text_count"] for r in frequencies}
    summary.images = True
    summary.run = run
    return adding.done(
        summary, run.run_id, lambda c: text[c.name], enlarged, run.shards_ok, run.samples_counted
    )


def _add_from_keys(
    adding: _Adding, lease: OutputLease, summary: AddConceptsSummary
) -> AddConceptsSummary:
    """Match the new concepts against the stored keys and commit the parent's tables plus them."""
    store, parent, config = adding.store, adding.parent, adding.config
    snapshot, new = adding.snapshot, adding.new
    started = datetime.now(UTC)
    nlp = load_pipeline(config.text.spacy_model)
    _check_pipeline(parent, pipeline_info(nlp))
    matcher = ConceptMatcher.build(new, nlp, config.text.method)
    del nlp  # only the concept terms needed it; the captions' keys are stored

    per_shard, samples = _match_stored_keys(snapshot["caption_keys"], matcher, adding.progress)
    total = merge(per_shard.values())
    lease.check()
    enlarged = _write_concepts((*adding.counted, *new), store.out)
    versions = _commit_tables(
        store, snapshot, parent, lease.holder, enlarged, new, per_shard, total
    )
    store.append_run(
        parent
        | {
            "run_id": lease.holder,
            "started_at": started,
            "finished_at": datetime.now(UTC),
            "kind": KIND,
            "parent_run_id": parent["run_id"],
            "shards_reused": None,  # reads no shard: the counts come from stored keys
            "concept_set": enlarged.source,
            "concept_set_hash": enlarged.content_hash,
            "concepts": len(enlarged),
            "text_hits": parent["text_hits"] + sum(total.text.values()),
            "concepts_with_hits": parent["concepts_with_hits"]
            + sum(1 for c in new if total.text[c.id]),
            "config": json.dumps(
                dataclasses.replace(config, concepts=enlarged.source).to_dict(), sort_keys=True
            ),
            "table_versions": json.dumps(versions, sort_keys=True),
            "fingerprint": with_concepts(
                parent.get("fingerprint"), enlarged, config.image is not None, len(new)
            ),
        }
    )
    return adding.done(
        summary, lease.holder, lambda c: total.text[c.id], enlarged, parent["shards_ok"], samples
    )


def _commit_tables(
    store: OutputStore,
    snapshot: dict[str, pads.Dataset],
    parent: dict[str, Any],
    run_id: str,
    enlarged: ConceptSet,
    new: ConceptSet,
    per_shard: dict[str, ShardTally],
    total: ShardTally,
) -> dict[str, int]:
    """Commit the parent's rows plus the new concepts'; returns the new run's table versions."""
    versions: dict[str, int] = json.loads(parent["table_versions"])
    old = snapshot["frequencies"].to_table()
    hash_and_run = {"concept_set_hash": enlarged.content_hash, "run_id": run_id}
    provenance = {
        k: v for k, v in old.slice(0, 1).to_pylist()[0].items() if k not in FREQUENCY_COUNT_COLUMNS
    }
    # The new concepts' image columns are NULL (thresholds None), also in a tagged run.
    frequencies = frequencies_table(
        new, total, parent["samples_counted"], provenance | hash_and_run, None
    )
    versions["frequencies"] = store.replace(
        "frequencies", pa.concat_tables([_with(old, hash_and_run), frequencies])
    )
    shard_counts = shard_counts_table(sorted(per_shard.items()), False, run_id)
    old_counts = _with(snapshot["shard_counts"].to_table(), {"run_id": run_id})
    versions["shard_counts"] = store.replace(
        "shard_counts", pa.concat_tables([old_counts, shard_counts])
    )
    shards = snapshot["shards"].to_table().to_pylist()
    for s in shards:
        if s["shard"] in per_shard:
            s["text_hits"] += sum(per_shard[s["shard"]].text.values())
        s["run_id"] = run_id
    versions["shards"] = store.replace("shards", pa.Table.from_pylist(shards, schema=SHARDS))
    return versions


def _counted_concepts(config: CountConfig, parent: dict[str, Any], old: pa.Table) -> ConceptSet:
    """The parent's concept set, as recorded, so the enlarged set keeps it exactly.

    Its concept file when that still holds the set the run recorded (descriptions included);
    otherwise, for a captions-only run (descriptions change no text count), the names and
    datasets of its ``frequencies``.
    """
    if config.image is not None and config.image.tagger == "rampp-closed":
        raise AddConceptsRefusedError(
            f"run {parent['run_id']} counts RAM++'s own tags (tagger rampp-closed): its concept "
            "set cannot be extended"
        )
    try:
        concepts = run_concepts(config)
    except ConceptSetError:
        concepts = None
    if concepts is not None and concepts.content_hash == parent["concept_set_hash"]:
        return concepts
    if config.image is not None:
        raise AddConceptsRefusedError(
            f"run {parent['run_id']}'s concept file {parent['concept_set']} is missing or has "
            "changed since the run, and its image counts depend on the concepts' descriptions; "
            "restore the file to add concepts"
        )
    return ConceptSet(
        tuple(
            Concept(r["concept"], tuple(r["concept_datasets"] or ()))
            for r in old.select(["concept", "concept_datasets"]).to_pylist()
        ),
        parent["concept_set"],
    )


def _check_caption_keys(store: OutputStore, parent: dict[str, Any]) -> None:
    """Refuse unless the run's caption keys cover every sample it counted."""
    versions = json.loads(parent["table_versions"])
    stored = (
        sum(f.num_rows for f in store.data_files("caption_keys", versions["caption_keys"]))
        if "caption_keys" in versions
        else 0
    )
    if stored != parent["samples_counted"]:
        raise AddConceptsRefusedError(
            f"run {parent['run_id']} kept caption keys for {stored:,} of the "
            f"{parent['samples_counted']:,} samples it counted (shards counted by a freqscan "
            "that kept none); `freqscan recount DIR --full` reads them again and keeps them"
        )


def _match_stored_keys(
    keys: pads.Dataset, matcher: ConceptMatcher, progress: Progress | None
) -> tuple[dict[str, ShardTally], int]:
    """Text tallies of the matcher's concepts per shard, one shard's keys file at a time."""
    fragments = list(keys.get_fragments())
    if progress is not None:
        progress.start(len(fragments))
    per_shard: dict[str, ShardTally] = {}
    samples = 0
    for fragment in fragments:
        table = fragment.to_table(columns=["shard", "nouns", "words"])
        shards = set(table.column("shard").unique().to_pylist())
        if len(shards) > 1:
            raise OutputError(f"{fragment.path}: a caption keys file holds {len(shards)} shards")
        ids = [
            matcher.match_keys(CaptionKeys(frozenset(nouns), frozenset(words)))
            for nouns, words in zip(
                table.column("nouns").to_pylist(), table.column("words").to_pylist(), strict=True
            )
        ]
        if shards:  # a shard with no counted sample has an empty file
            nothing = [None] * len(ids)
            per_shard[shards.pop()] = tally(ids, nothing, nothing, None)
        samples += table.num_rows
        if progress is not None:
            progress.shard_done(table.num_rows)
    return per_shard, samples


def _write_concepts(concepts: tuple[Concept, ...], out: str) -> ConceptSet:
    """Write concepts, in order, as a JSON file that :func:`load_concepts` reads back identically.

    Named by its content, so adding the same concepts again (a resumed tagging run) names the
    same file and the run's configuration is the same.
    """
    rows = [
        {"concept": c.name, "datasets": list(c.datasets), "descriptions": list(c.descriptions)}
        for c in concepts
    ]
    data = json.dumps(rows, ensure_ascii=False).encode("utf-8")
    name = hashlib.sha256(data).hexdigest()[:16]
    written = ConceptSet(concepts, f"{out.rstrip('/')}/{CONCEPTS_DIR}/{name}.json")
    fs, path = fsspec.core.url_to_fs(written.source)
    fs.makedirs(fs._parent(path), exist_ok=True)
    fs.pipe_file(path, data)
    return written


def _with(table: pa.Table, values: dict[str, Any]) -> pa.Table:
    """``table`` with each named column set to one value on every row."""
    for name, value in values.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(
            i,
            table.schema.field(i),
            pa.repeat(pa.scalar(value, table.schema.field(i).type), len(table)),
        )
    return table
