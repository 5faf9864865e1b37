"""Concept sets: the paper's default set and user files (txt, csv, json).

A concept's id is derived from its exact name, so it is the same in every concept set and every
run: adding concepts later never renumbers the old ones. A set's content hash covers names,
source datasets and descriptions, and is recorded with every output.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import fsspec

from freqscan.errors import UserError

PAPER_SET = "paper"
_DATA = "freqscan.data"


class ConceptSetError(UserError, ValueError):
    """A concept file cannot be loaded; the message says why and what format is expected."""


def concept_id(name: str) -> int:
    """Stable non-negative int64 id of a concept name (case and spacing kept)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass(frozen=True, slots=True)
class Concept:
    """One concept.

    Args:
        name: The concept as the user wrote it (case kept).
        datasets: Downstream datasets the concept comes from, if known.
        descriptions: Descriptions for open-set image tagging, if any.
    """

    name: str
    datasets: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()

    @property
    def id(self) -> int:
        return concept_id(self.name)


@dataclass(frozen=True)
class ConceptSet:
    """An ordered set of uniquely named concepts.

    Args:
        concepts: The concepts, in file order.
        source: Where they came from (``paper`` or the file path).
    """

    concepts: tuple[Concept, ...]
    source: str

    def __post_init__(self) -> None:
        if not self.concepts:
            raise ConceptSetError(f"{self.source}: the concept set is empty")
        names = Counter(c.name for c in self.concepts)
        dupes = sorted(n for n, k in names.items() if k > 1)
        if dupes:
            raise ConceptSetError(
                f"{self.source}: duplicate concept names: {', '.join(map(repr, dupes[:10]))}"
            )
        ids = Counter(c.id for c in self.concepts)
        if len(ids) != len(self.concepts):  # a 63-bit collision; never seen, but never silent
            raise ConceptSetError(f"{self.source}: two concept names share an id")

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self):
        return iter(self.concepts)

    @cached_property
    def content_hash(self) -> str:
        """sha256 over the sorted (name, datasets, descriptions) of every concept."""
        canonical = sorted([c.name, list(c.datasets), list(c.descriptions)] for c in self.concepts)
        blob = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def by_name(self, name: str) -> Concept | None:
        return next((c for c in self.concepts if c.name == name), None)


def load_concepts(path: str | None = None) -> ConceptSet:
    """Load a concept set.

    Args:
        path: ``None`` or ``"paper"`` for the paper's 4,070 concepts; else a ``.txt`` (one
            concept per line, ``#`` comments), ``.csv`` (a ``concept`` column, optional
            ``datasets`` separated by ``;``) or ``.json`` file (a list of names, a list of
            ``{"concept", "datasets", "descriptions"}`` objects, or a mapping of name to
            descriptions as in the paper's ``gpt_descriptions`` files). UTF-8, with or
            without the byte-order mark Windows editors write.
    """
    if path is None or path == PAPER_SET:
        return _paper_set()
    suffix = Path(path.split("?")[0]).suffix.lower()
    loaders = {".txt": _parse_txt, ".csv": _parse_csv, ".json": _parse_json}
    if suffix not in loaders:
        raise ConceptSetError(
            f"{path}: unknown concept file type {suffix!r}; use .txt, .csv or .json"
        )
    try:
        # utf-8-sig drops a byte-order mark, which would otherwise start the first name.
        with fsspec.open(path, "rt", encoding="utf-8-sig") as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        raise ConceptSetError(f"{path}: concept file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConceptSetError(f"{path}: concept file is not valid UTF-8 ({exc})") from exc
    return ConceptSet(tuple(loaders[suffix](text, path)), source=path)


def _paper_set() -> ConceptSet:
    root = resources.files(_DATA) / "concepts"
    with gzip.open(io.BytesIO((root / "paper_descriptions.json.gz").read_bytes()), "rt") as fh:
        descriptions: dict[str, list[str]] = json.load(fh)
    rows = csv.DictReader(io.StringIO((root / "paper_concepts.csv").read_text("utf-8")))
    concepts = tuple(
        Concept(
            name=row["concept"],
            datasets=_split_datasets(row.get("datasets")),
            descriptions=tuple(descriptions.get(row["concept"], ())),
        )
        for row in rows
    )
    return ConceptSet(concepts, source=PAPER_SET)


def _split_datasets(value: str | None) -> tuple[str, ...]:
    return tuple(d.strip() for d in (value or "").split(";") if d.strip())


def _checked_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConceptSetError(f"{where}: concept name must be a non-empty string, got {value!r}")
    return value.strip()


def concept_lines(text: str) -> list[str]:
    """Names from a one-per-line list: blank and ``#`` lines skipped, one pair of
    enclosing quotes removed (the paper's Let-it-Wag list quotes every name)."""
    names = []
    for line in text.splitlines():
        name = line.strip()
        if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
            name = name[1:-1].strip()
        if name and not line.lstrip().startswith("#"):
            names.append(name)
    return names


def _parse_txt(text: str, path: str) -> list[Concept]:
    return [Concept(name) for name in concept_lines(text)]


def _parse_csv(text: str, path: str) -> list[Concept]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    name_col = next((c for c in ("concept", "name") if c in columns), None)
    if name_col is None:
        raise ConceptSetError(f"{path}: csv needs a 'concept' column; found {columns}")
    return [
        Concept(
            _checked_name(row[name_col], f"{path} line {i + 2}"),
            _split_datasets(row.get("datasets")),
        )
        for i, row in enumerate(reader)
    ]


def _parse_json(text: str, path: str) -> list[Concept]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConceptSetError(f"{path}: invalid JSON ({exc})") from exc
    if isinstance(data, dict):
        return [
            Concept(_checked_name(k, path), (), _descriptions(k, v, path)) for k, v in data.items()
        ]
    if isinstance(data, list):
        return [_json_item(item, f"{path} item {i}") for i, item in enumerate(data)]
    raise ConceptSetError(f"{path}: JSON must be a list or an object, got {type(data).__name__}")


def _json_item(item: Any, where: str) -> Concept:
    if isinstance(item, str):
        return Concept(_checked_name(item, where))
    if isinstance(item, dict) and "concept" in item:
        name = _checked_name(item["concept"], where)
        datasets = item.get("datasets", ())
        datasets = _split_datasets(datasets) if isinstance(datasets, str) else tuple(datasets)
        return Concept(name, datasets, _descriptions(name, item.get("descriptions", []), where))
    raise ConceptSetError(
        f"{where}: expected a name or an object with a 'concept' key, got {item!r}"
    )


def _descriptions(name: str, value: Any, where: str) -> tuple[str, ...]:
    # The paper's gpt_descriptions files nest the list one level: {name: {name: [...]}}.
    if isinstance(value, dict) and list(value) == [name]:
        value = value[name]
    if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
        raise ConceptSetError(f"{where}: descriptions of {name!r} must be a list of strings")
    return tuple(value)
