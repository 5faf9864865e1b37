"""Where the evaluation jobs get their numbers: per-concept counts and per-concept performance.

Counts come from

* a freqscan output directory (the ``frequencies`` table of its latest or a given run),
* the paper's ``search_counts`` JSON files (a directory of them, or ``paper``: the CC3M files
  bundled with freqscan),
* a JSON file ``{concept: count}`` or a CSV with a ``concept`` column and a count column (for
  instance ``freqscan query --csv OUT "SELECT concept, text_count FROM frequencies"``).

Performance comes from the paper's zero-shot result JSONs (``<dataset>_<prompt>_results.json``:
``{model: {"full": .., "classwise": {class: accuracy}}}``; a directory of them, one file, or
``paper``), from what ``freqscan eval zeroshot`` writes (the same format), or from a CSV with
``concept`` and ``metric`` (or ``accuracy``) columns and optional ``model``, ``dataset`` and
``prompt`` columns.

Class names and concept names are matched exactly first, then case- and separator-insensitively
(``great_white_shark`` = ``great white shark``), then through :data:`CLASS_ALIASES`.

Files are read as UTF-8 with ``utf-8-sig``, so a byte-order mark (Windows editors write one)
never becomes part of a column name or of the first concept.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from freqscan.concepts import concept_lines


class EvalInputError(ValueError):
    """An evaluation input is missing or not in a format the jobs read (a user error)."""


# The source name that selects the paper's CC3M files bundled with freqscan.
PAPER_SOURCE = "paper"
BUNDLED_PAPER_FILES = "cc3m_paper_files.json.gz"
BUNDLED_LET_IT_WAG = "let_it_wag_class_list.txt"

# The 18 classification datasets the paper pools for Fig. 2 (``datasets_included`` in
# zero_shot_integrated_search_results.ipynb); imagenet-r is left out there.
PAPER_FIG2_DATASETS: tuple[str, ...] = (
    "imagenet",
    "cifar10",
    "cifar100",
    "caltech101",
    "caltech256",
    "sun397",
    "birdsnap",
    "country211",
    "cub",
    "dtd",
    "eurosat",
    "fgvcaircraft",
    "flowers102",
    "food101",
    "imagenet-sketch",
    "oxfordpets",
    "stanfordcars",
    "ucf101",
)
PAPER_PROMPTS: tuple[str, ...] = ("simple", "ensemble", "class")

# Count types: a short name -> the paper's search-count method, and -> the frequencies column.
PAPER_METHODS: dict[str, str] = {
    "text": "lemmatized",
    "lemmatized": "lemmatized",
    "image": "rampp0.7",
    "rampp": "rampp0.7",
    "integrated": "integrated_tlemmatized_i0.7",
}
COUNT_COLUMNS: dict[str, str] = {
    "text": "text_count",
    "lemmatized": "text_count",
    "image": "image_count",
    "rampp": "image_count",
    "integrated": "integrated_count",
}
COUNT_TYPES: tuple[str, ...] = ("integrated", "text", "image")

# Class names whose benchmark spelling differs from the concept; cifar10's "plane" is renamed
# "airplane" in the paper's own notebook before the join.
CLASS_ALIASES: dict[str, str] = {"plane": "airplane"}

_COUNTS_FILE = re.compile(r"^(?P<dataset>[^_]+)_(?P<pretrain>[^_]+)_(?P<method>.+)_search_counts$")
_RESULTS_FILE = re.compile(r"^(?P<dataset>[^_]+)_(?P<prompt>[^_]+)_results$")
_PAPER_MODEL = re.compile(r"^backbone(?P<arch>.+?)_pretrained(?P<data>.+)$")


def normalize_name(name: str) -> str:
    """Case- and separator-insensitive form of a concept or class name."""
    return re.sub(r"[_\s]+", " ", name).strip().lower()


def model_label(key: str) -> str:
    """``backboneRN50_pretrainedcc3m`` -> ``RN50``; other keys unchanged."""
    match = _PAPER_MODEL.match(key)
    return match["arch"] if match else key


def model_matches(key: str, wanted: Iterable[str]) -> bool:
    wanted = list(wanted)
    return not wanted or key in wanted or model_label(key) in wanted


# ------------------------------------------------------------------------------------ counts


@dataclass(frozen=True, slots=True)
class ConceptCounts:
    """Per-concept counts of one pretraining set, by one method.

    Args:
        counts: Concept -> count, over every concept of the source.
        by_dataset: Downstream dataset -> its concepts' counts, where the source is split that
            way (the paper's files are one per downstream dataset); empty otherwise.
        concept_datasets: Concept -> downstream datasets it belongs to, where known.
        count_type: The count type asked for (``integrated``, ``text``, ``image`` or a method).
        column: What was read: a paper method, a frequencies column or a CSV column.
        label: Short description for tables and legends.
        source: Where the counts came from.
        notes: Fallbacks and other things a user should know.
        run: The freqscan run record, for a freqscan output.
    """

    counts: dict[str, int]
    count_type: str
    column: str
    label: str
    source: str
    by_dataset: dict[str, dict[str, int]] = field(default_factory=dict)
    concept_datasets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    run: dict[str, Any] | None = None

    def for_dataset(self, dataset: str) -> dict[str, int] | None:
        """The counts that belong to ``dataset``'s classes, or ``None`` if this source has none.

        Paper files give them directly; a freqscan output gives every concept (the join picks
        the classes).
        """
        if self.by_dataset:
            return self.by_dataset.get(dataset)
        return self.counts


class PaperFiles:
    """The paper's JSON files, from a directory or from the bundle shipped with freqscan.

    Args:
        files: File name (``..._search_counts.json`` / ``..._results.json``) -> loader.
        where: Where they are, for messages.
    """

    def __init__(self, files: dict[str, Callable[[], Any]], where: str) -> None:
        self.where = where
        self._files = files
        self._cache: dict[str, Any] = {}
        self.counts: dict[tuple[str, str, str], str] = {}
        self.results: dict[tuple[str, str], str] = {}
        for name in sorted(files):
            stem = Path(name).name.removesuffix(".json")
            if match := _COUNTS_FILE.match(stem):
                self.counts[(match["dataset"], match["pretrain"], match["method"])] = name
            elif match := _RESULTS_FILE.match(stem):
                self.results[(match["dataset"], match["prompt"])] = name

    @classmethod
    def bundled(cls) -> PaperFiles:
        """The paper's CC3M counts (3 methods) and zero-shot results shipped with freqscan."""
        path = resources.files("freqscan.data") / "paper_eval" / BUNDLED_PAPER_FILES
        with gzip.open(str(path), "rt", encoding="utf-8") as fh:
            content: dict[str, Any] = json.load(fh)
        return cls({k: (lambda v=v: v) for k, v in content.items()}, f"bundled {path.name}")

    @classmethod
    def from_dir(cls, root: str | os.PathLike) -> PaperFiles:
        root = Path(root)
        found = [
            p
            for pattern in ("*_search_counts.json", "*_results.json")
            for p in sorted(root.rglob(pattern))
        ]
        loaders = {str(p.relative_to(root)): (lambda p=p: _read_json(p)) for p in found}
        return cls(loaders, str(root))

    def load(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = self._files[name]()
        return self._cache[name]

    def pretrains(self) -> list[str]:
        return sorted({pt for _, pt, _ in self.counts})

    def methods(self, pretrain: str) -> list[str]:
        return sorted({m for _, pt, m in self.counts if pt == pretrain})

    def count_datasets(self, pretrain: str, method: str) -> list[str]:
        return sorted(ds for ds, pt, m in self.counts if pt == pretrain and m == method)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalInputError(f"{path}: cannot read JSON ({exc})") from exc


def is_freqscan_output(path: str) -> bool:
    """Whether ``path`` is a freqscan output directory (it has a Delta ``runs`` table)."""
    if "://" not in path and not os.path.isdir(path):
        return False
    from freqscan.tables.store import OutputStore

    try:
        return OutputStore(path).exists()
    except Exception:  # noqa: BLE001 - any storage error means "not an output we can read"
        return False


def paper_files(source: str) -> PaperFiles | None:
    """The paper's files behind ``source`` (``paper`` or a directory of them), else ``None``."""
    if source == PAPER_SOURCE:
        return PaperFiles.bundled()
    if os.path.isdir(source) and not is_freqscan_output(source):
        files = PaperFiles.from_dir(source)
        if files.counts or files.results:
            return files
    return None


def paper_method(count_type: str) -> str:
    return PAPER_METHODS.get(count_type, count_type)


def load_counts(
    source: str,
    count_type: str = "integrated",
    *,
    pretrain: str | None = None,
    run_id: str | None = None,
) -> ConceptCounts:
    """Per-concept counts from a freqscan output, the paper's files, or a JSON/CSV file.

    Args:
        source: ``paper``, a directory of the paper's ``*_search_counts.json`` files, a
            freqscan output directory, a ``.json`` file or a ``.csv`` file.
        count_type: ``integrated``, ``text`` or ``image`` (or, for paper files, a method name
            such as ``rampp0.5``). A freqscan output without image counts falls back to text
            counts, and says so in ``notes``.
        pretrain: Pretraining dataset of the paper's files (default: the only one, or cc3m).
        run_id: Run of a freqscan output (default: its latest succeeded run).
    """
    if is_freqscan_output(source):
        return counts_from_output(source, count_type, run_id)
    files = paper_files(source)
    if files is not None:
        return counts_from_paper(files, count_type, pretrain)
    if source.endswith(".json") and os.path.isfile(source):
        return _counts_from_json(source, count_type)
    if source.endswith(".csv") and os.path.isfile(source):
        return _counts_from_csv(source, count_type)
    raise EvalInputError(
        f"counts {source!r}: not a freqscan output, a directory of *_search_counts.json files, "
        f"'{PAPER_SOURCE}', or a .json/.csv file"
    )


def _pick_pretrain(files: PaperFiles, pretrain: str | None) -> str:
    available = files.pretrains()
    if not available:
        raise EvalInputError(f"{files.where}: no *_search_counts.json files")
    if pretrain is None:
        return available[0] if len(available) == 1 else ("cc3m" if "cc3m" in available else "")
    if pretrain not in available:
        raise EvalInputError(
            f"{files.where}: no counts for pretraining set {pretrain!r}; "
            f"available: {', '.join(available)}"
        )
    return pretrain


def counts_from_paper(files: PaperFiles, count_type: str, pretrain: str | None) -> ConceptCounts:
    """The paper's per-downstream-dataset counts of one method, merged by concept."""
    pretrain = _pick_pretrain(files, pretrain)
    if not pretrain:
        raise EvalInputError(f"{files.where}: several pretraining sets; pass --pretrain")
    method = paper_method(count_type)
    datasets = files.count_datasets(pretrain, method)
    if not datasets:
        raise EvalInputError(
            f"{files.where}: no {pretrain} counts for count type {count_type!r} "
            f"(method {method!r}); available methods: {', '.join(files.methods(pretrain))}"
        )
    by_dataset: dict[str, dict[str, int]] = {}
    merged: dict[str, int] = {}
    members: dict[str, list[str]] = {}
    for ds in datasets:
        data = files.load(files.counts[(ds, pretrain, method)])
        if not isinstance(data, dict):
            raise EvalInputError(f"{files.where}: {ds} {method} counts are not a JSON object")
        by_dataset[ds] = {str(k): int(v) for k, v in data.items()}
        for concept, n in by_dataset[ds].items():
            merged.setdefault(concept, n)  # first dataset in name order wins, as the notebooks
            members.setdefault(concept, []).append(ds)
    return ConceptCounts(
        counts=merged,
        count_type=count_type,
        column=method,
        label=f"{pretrain} {method}",
        source=files.where,
        by_dataset=by_dataset,
        concept_datasets={c: tuple(d) for c, d in members.items()},
    )


def counts_from_frequencies(
    rows: list[dict[str, Any]], count_type: str, where: str
) -> tuple[dict[str, int], str, tuple[str, ...]]:
    """Pick the count column of ``frequencies`` rows; text counts when image counts are missing.

    Returns the counts, the column used and notes on any fallback.
    """
    if count_type not in COUNT_COLUMNS:
        raise EvalInputError(
            f"count type {count_type!r} is not one of {', '.join(COUNT_TYPES)} "
            "for a freqscan output"
        )
    column = COUNT_COLUMNS[count_type]
    notes: list[str] = []
    present = bool(rows) and column in rows[0]
    if column != "text_count" and (not present or all(r[column] is None for r in rows)):
        why = "has no" if not present else "has only NULL"
        notes.append(
            f"{where} {why} {column} (a text-only run, no image tagger): using text_count instead"
        )
        column = "text_count"
    elif column != "text_count" and any(r[column] is None for r in rows):
        notes.append(f"{where}: {column} is NULL for some concepts; those use text_count")
    counts = {}
    for r in rows:
        value = r[column] if r.get(column) is not None else r["text_count"]
        counts[r["concept"]] = int(value or 0)
    return counts, column, tuple(notes)


def counts_from_output(out: str, count_type: str, run_id: str | None = None) -> ConceptCounts:
    """Counts of a freqscan output's ``frequencies`` table (latest or given run)."""
    from freqscan.query import connect
    from freqscan.tables.store import OutputError, OutputStore

    try:
        run = OutputStore(out).current_run(run_id)
        con = connect(out, run_id)
    except OutputError as exc:
        raise EvalInputError(str(exc)) from exc
    try:
        rows = con.sql("SELECT * FROM frequencies ORDER BY concept_id").to_arrow_table().to_pylist()
    finally:
        con.close()
    where = f"{out} (run {run['run_id']})"
    counts, column, notes = counts_from_frequencies(rows, count_type, where)
    datasets = {
        r["concept"]: tuple(r.get("concept_datasets") or ()) for r in rows if r.get("concept")
    }
    name = run.get("dataset") or Path(out).name
    return ConceptCounts(
        counts=counts,
        count_type=count_type,
        column=column,
        label=f"{name} {column.removesuffix('_count')}",
        source=out,
        concept_datasets=datasets,
        notes=notes,
        run=run,
    )


def _counts_from_json(path: str, count_type: str) -> ConceptCounts:
    data = _read_json(Path(path))
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise EvalInputError(f"{path}: expected a JSON object {{concept: count}}")
    counts = {str(k): int(v) for k, v in data.items()}
    stem = Path(path).name.removesuffix(".json")
    by_dataset = {}
    if match := _COUNTS_FILE.match(stem):
        by_dataset = {match["dataset"]: counts}
    return ConceptCounts(
        counts=counts,
        count_type=count_type,
        column="count",
        label=stem,
        source=path,
        by_dataset=by_dataset,
    )


def _read_csv(path: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise EvalInputError(f"{path}: cannot read ({exc})") from exc


def _counts_from_csv(path: str, count_type: str) -> ConceptCounts:
    rows = _read_csv(path)
    header = list(rows[0]) if rows else []
    if "concept" not in header:
        raise EvalInputError(f"{path}: needs a 'concept' column (has {', '.join(header)})")
    wanted = COUNT_COLUMNS.get(count_type, count_type)
    candidates = [wanted, "integrated_count", "image_count", "text_count", "count"]
    column = next((c for c in candidates if c in header), None)
    if column is None:
        raise EvalInputError(f"{path}: no count column (one of {', '.join(candidates)})")
    notes = ()
    if column != wanted and wanted in COUNT_COLUMNS.values():
        notes = (f"{path} has no {wanted}: using {column}",)
    counts: dict[str, int] = {}
    by_dataset: dict[str, dict[str, int]] = {}
    for r in rows:
        value = r[column]
        if value in ("", None):
            continue
        counts[r["concept"]] = int(float(value))
        if r.get("dataset"):
            by_dataset.setdefault(r["dataset"], {})[r["concept"]] = counts[r["concept"]]
    return ConceptCounts(
        counts=counts,
        count_type=count_type,
        column=column,
        label=Path(path).stem,
        source=path,
        by_dataset=by_dataset,
        notes=notes,
    )


# ------------------------------------------------------------------------------- performance


@dataclass(frozen=True, slots=True)
class Performance:
    """One model's per-class metric on one downstream dataset with one prompt mode.

    Args:
        model: Model key (the paper's ``backboneRN50_pretrainedcc3m``, or any name).
        dataset: Downstream dataset.
        prompt: Prompt mode (``simple``, ``ensemble``, ``class``), ``None`` if not known.
        values: Class name -> metric (zero-shot accuracy in percent for the paper's files).
        source: Where it came from.
    """

    model: str
    dataset: str
    prompt: str | None
    values: dict[str, float]
    source: str

    @property
    def model_label(self) -> str:
        return model_label(self.model)


def _results_from_json(
    data: Any, dataset: str, prompt: str | None, where: str
) -> list[Performance]:
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("classwise"), dict) for v in data.values()
    ):
        raise EvalInputError(f"{where}: expected {{model: {{'full': .., 'classwise': {{..}}}}}}")
    return [
        Performance(
            model=str(key),
            dataset=dataset,
            prompt=prompt,
            values={str(c): float(a) for c, a in value["classwise"].items()},
            source=where,
        )
        for key, value in data.items()
    ]


def load_performance(
    source: str,
    *,
    prompts: Iterable[str] = (),
    models: Iterable[str] = (),
    datasets: Iterable[str] = (),
) -> list[Performance]:
    """Per-class performance from the paper's result JSONs, a result JSON, or a CSV.

    Args:
        source: ``paper``, a directory of ``<dataset>_<prompt>_results.json`` files (the paper's
            or ``freqscan eval zeroshot``'s), one such file, or a ``.csv`` with ``concept`` and
            ``metric`` (or ``accuracy``) columns and optional ``model``, ``dataset``, ``prompt``.
        prompts: Keep these prompt modes only (default: all).
        models: Keep these models (key or label such as ``RN50``; default: all).
        datasets: Keep these downstream datasets (default: all).
    """
    prompts, models, datasets = list(prompts), list(models), list(datasets)
    found: list[Performance] = []
    files = paper_files(source)
    if files is not None:
        if not files.results:
            raise EvalInputError(f"{files.where}: no <dataset>_<prompt>_results.json files")
        for (ds, prompt), name in sorted(files.results.items()):
            if (prompts and prompt not in prompts) or (datasets and ds not in datasets):
                continue
            found += _results_from_json(files.load(name), ds, prompt, f"{files.where}/{name}")
    elif source.endswith(".json") and os.path.isfile(source):
        stem = Path(source).name.removesuffix(".json")
        match = _RESULTS_FILE.match(stem)
        ds, prompt = (match["dataset"], match["prompt"]) if match else (stem, None)
        if not (prompts and prompt is not None and prompt not in prompts):
            found += _results_from_json(_read_json(Path(source)), ds, prompt, source)
    elif source.endswith(".csv") and os.path.isfile(source):
        found += _performance_from_csv(source, prompts)
    else:
        raise EvalInputError(
            f"performance {source!r}: not '{PAPER_SOURCE}', a directory of *_results.json "
            "files, a results .json, or a .csv"
        )
    found = [
        p
        for p in found
        if model_matches(p.model, models) and (not datasets or p.dataset in datasets)
    ]
    if not found:
        raise EvalInputError(
            f"performance {source!r}: nothing left for models {models or 'all'}, prompts "
            f"{prompts or 'all'}, datasets {datasets or 'all'}"
        )
    return found


def _performance_from_csv(path: str, prompts: list[str]) -> list[Performance]:
    rows = _read_csv(path)
    header = list(rows[0]) if rows else []
    metric = next((c for c in ("metric", "accuracy") if c in header), None)
    if "concept" not in header or metric is None:
        raise EvalInputError(
            f"{path}: needs 'concept' and 'metric' (or 'accuracy') columns "
            f"(has {', '.join(header)})"
        )
    groups: dict[tuple[str, str, str | None], dict[str, float]] = {}
    for r in rows:
        prompt = r.get("prompt") or None
        if prompts and prompt is not None and prompt not in prompts:
            continue
        key = (r.get("model") or Path(path).stem, r.get("dataset") or Path(path).stem, prompt)
        groups.setdefault(key, {})[r["concept"]] = float(r[metric])
    return [
        Performance(model=m, dataset=d, prompt=p, values=v, source=path)
        for (m, d, p), v in groups.items()
    ]


# ------------------------------------------------------------------------------------- join


@dataclass(frozen=True, slots=True)
class JoinedPoints:
    """Concepts that have both a count and a metric.

    Args:
        concepts: Class names, as the performance source spells them.
        datasets: Downstream dataset of each point.
        counts: Count of each point.
        metrics: Metric of each point.
        unmatched: Dataset -> classes with no count (left out).
        skipped_datasets: Datasets with performance but no counts (left out).
    """

    concepts: tuple[str, ...]
    datasets: tuple[str, ...]
    counts: tuple[int, ...]
    metrics: tuple[float, ...]
    unmatched: dict[str, tuple[str, ...]]
    skipped_datasets: tuple[str, ...]

    def subset(self, dataset: str) -> tuple[list[int], list[float]]:
        idx = [i for i, d in enumerate(self.datasets) if d == dataset]
        return [self.counts[i] for i in idx], [self.metrics[i] for i in idx]


def match_class(name: str, counts: dict[str, int], normalized: dict[str, str]) -> str | None:
    """The concept in ``counts`` that class ``name`` refers to, or ``None``."""
    if name in counts:
        return name
    key = normalize_name(name)
    if key in normalized:
        return normalized[key]
    alias = CLASS_ALIASES.get(key)
    if alias is not None:
        return normalized.get(normalize_name(alias))
    return None


def _normalized_index(counts: dict[str, int]) -> dict[str, str]:
    index: dict[str, str] = {}
    for concept in counts:
        index.setdefault(normalize_name(concept), concept)
    return index


def join(counts: ConceptCounts, performances: Iterable[Performance]) -> JoinedPoints:
    """Pair each class of each performance with its concept's count.

    The paper's order is kept: datasets in the given order, classes sorted by the concept name
    of the count file (``for key in sorted(counts)`` in the notebooks).
    """
    concepts: list[str] = []
    datasets: list[str] = []
    values: list[int] = []
    metrics: list[float] = []
    unmatched: dict[str, tuple[str, ...]] = {}
    skipped: list[str] = []
    for perf in performances:
        pool = counts.for_dataset(perf.dataset)
        if pool is None:
            skipped.append(perf.dataset)
            continue
        index = _normalized_index(pool)
        pairs = []
        missing = []
        for name, metric in perf.values.items():
            concept = match_class(name, pool, index)
            if concept is None:
                missing.append(name)
            else:
                pairs.append((concept, name, metric))
        for concept, name, metric in sorted(pairs):
            concepts.append(name)
            datasets.append(perf.dataset)
            values.append(pool[concept])
            metrics.append(metric)
        if missing:
            unmatched[perf.dataset] = tuple(missing)
    return JoinedPoints(
        concepts=tuple(concepts),
        datasets=tuple(datasets),
        counts=tuple(values),
        metrics=tuple(metrics),
        unmatched=unmatched,
        skipped_datasets=tuple(dict.fromkeys(skipped)),
    )


# --------------------------------------------------------------------------- concept lists


def read_concept_list(path: str) -> list[str]:
    """Concept names from a text file (one per line, optional quotes) or a CSV ``concept`` column.

    The paper's ``let_it_wag_class_list.txt`` has one quoted name per line.
    """
    if path == PAPER_SOURCE:
        ref = resources.files("freqscan.data") / "paper_eval" / BUNDLED_LET_IT_WAG
        text = ref.read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise EvalInputError(f"{path}: cannot read ({exc})") from exc
    if path.endswith(".csv"):
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "concept" not in rows[0]:
            raise EvalInputError(f"{path}: needs a 'concept' column")
        return [r["concept"] for r in rows if r["concept"]]
    return concept_lines(text)
