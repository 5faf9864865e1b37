"""Job metrics through ``ray.util.metrics``, exported on Ray's Prometheus endpoint.

:data:`METRICS` lists every metric once (name, type, description, tags); the README's table and
dashboards read it. Each stage's Ray adapter holds one recorder, made in the actor's
``__init__`` (Ray metrics belong to the process that records them): :class:`ReadMetrics` in
``ShardReadWorker``, :class:`TagMetrics` in ``ImageTagWorker``. Every series carries the tags
``run_id`` and ``dataset``; the other tags are small, fixed sets (never a concept or a shard).

The read stage records a shard when its outcome row passes, before that row leaves the actor,
and counts like the run summary: samples, skips and text hits of shards read ok; a failed shard
adds to ``shards{status="failed"}`` only. The tag stage counts what it tagged, batch by batch.

Metrics of exiting actors (checked against Ray 2.60's endpoint, tests/test_metrics.py): a
worker reports its metrics to its node's agent every ``metrics_report_interval_ms`` (10 s) and
once more when it exits, also when Ray Data releases a pool at the end of a dataset or kills
it with ``ray.kill``; the agent keeps counters and histograms after the worker is gone, so a
run's totals stay on the endpoint. Only a worker that dies hard (SIGKILL, OOM, node loss) loses
what it recorded since its last report, and a shard whose task Ray retries may be recorded
twice; the tables stay exact either way. The endpoint needs ``ray[default]`` (the agent).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.compute as pc

from freqscan.counting.shard import ShardOutcome
from freqscan.records import SHARD_OK

if TYPE_CHECKING:
    from ray.util.metrics import Counter, Histogram

# Every metric's tags start with these; the recorders set them once as default tags.
DEFAULT_TAGS = ("run_id", "dataset")
# Ray exports every metric under this prefix.
RAY_PREFIX = "ray_"

# 1 ms .. 60 s: a tiny CPU batch up to a large batch on a busy or cold GPU.
BATCH_SECONDS_BOUNDARIES = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
BATCH_IMAGES_BOUNDARIES = tuple(float(2**i) for i in range(13))  # 1 .. 4096

STAGE_READ = "read"
STAGE_TAG = "tag"


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric.

    Args:
        name: The name given to ``ray.util.metrics`` (Ray adds :data:`RAY_PREFIX`).
        kind: ``counter`` or ``histogram``.
        description: What it measures (Prometheus ``HELP``).
        tags: Tag keys after :data:`DEFAULT_TAGS`.
        boundaries: Bucket upper bounds of a histogram.
    """

    name: str
    kind: Literal["counter", "histogram"]
    description: str
    tags: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()

    @property
    def tag_keys(self) -> tuple[str, ...]:
        return (*DEFAULT_TAGS, *self.tags)

    @property
    def prometheus_names(self) -> tuple[str, ...]:
        """The series names on the endpoint: counters as ``_total``, histograms in three."""
        base = RAY_PREFIX + self.name
        if self.kind == "counter":
            return (f"{base}_total",)
        return (f"{base}_bucket", f"{base}_sum", f"{base}_count")


SAMPLES = MetricSpec(
    "freqscan_samples",
    "counter",
    "Samples through a stage: stage=read every sample of a shard read ok (skipped ones "
    "included); stage=tag images tagged.",
    ("stage",),
)
SAMPLES_COUNTED = MetricSpec(
    "freqscan_samples_counted", "counter", "Usable samples of the shards read ok."
)
SAMPLES_SKIPPED = MetricSpec(
    "freqscan_samples_skipped",
    "counter",
    "Samples skipped in the shards read ok, per reason (empty_caption, invalid_utf8, ...).",
    ("reason",),
)
IMAGES_DECODED = MetricSpec(
    "freqscan_images_decoded",
    "counter",
    "Images decoded and resized for tagging, in the shards read ok.",
)
IMAGES_SKIPPED = MetricSpec(
    "freqscan_images_skipped",
    "counter",
    "Images not tagged in the shards read ok, per reason (undecodable_image, truncated_image, "
    "missing_image, image_too_large).",
    ("reason",),
)
SHARDS = MetricSpec(
    "freqscan_shards",
    "counter",
    "Shards finished: status=ok, or status=failed with reason the error reason.",
    ("status", "reason"),
)
SHARD_READ_RETRIES = MetricSpec(
    "freqscan_shard_read_retries",
    "counter",
    "Reads of a shard after its first one, after transient failures.",
)
CONCEPT_HITS = MetricSpec(
    "freqscan_concept_hits",
    "counter",
    "Concept hits: kind=text caption matches in the shards read ok; kind=image scores at or "
    "above the score floor.",
    ("kind",),
)
# Ray 2.60's agent rebuilds a worker's histogram from its bucket counts, so `_sum` is only
# approximate (bucket midpoints): totals come from the counters, histograms give the shape.
BATCH_SECONDS = MetricSpec(
    "freqscan_batch_seconds",
    "histogram",
    "Seconds per tagging batch on the device (pixels in, scores out).",
    ("stage",),
    BATCH_SECONDS_BOUNDARIES,
)
BATCH_IMAGES = MetricSpec(
    "freqscan_batch_images",
    "histogram",
    "Images per tagging batch.",
    ("stage",),
    BATCH_IMAGES_BOUNDARIES,
)

METRICS: tuple[MetricSpec, ...] = (
    SAMPLES,
    SAMPLES_COUNTED,
    SAMPLES_SKIPPED,
    IMAGES_DECODED,
    IMAGES_SKIPPED,
    SHARDS,
    SHARD_READ_RETRIES,
    CONCEPT_HITS,
    BATCH_SECONDS,
    BATCH_IMAGES,
)


class _Recorder:
    """The Ray metrics of some specs, with the run's default tags."""

    def __init__(self, specs: Iterable[MetricSpec], run_id: str, dataset: str) -> None:
        # Imported here: the driver, the docs and Ray-free tests read METRICS without Ray.
        from ray.util.metrics import Counter, Histogram

        defaults = {"run_id": run_id, "dataset": dataset}
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        for spec in specs:
            if spec.kind == "counter":
                counter = Counter(spec.name, spec.description, spec.tag_keys)
                self._counters[spec.name] = counter.set_default_tags(defaults)
            else:
                histogram = Histogram(
                    spec.name, spec.description, list(spec.boundaries), spec.tag_keys
                )
                self._histograms[spec.name] = histogram.set_default_tags(defaults)

    def _inc(self, spec: MetricSpec, value: int, **tags: str) -> None:
        if value > 0:  # Counter.inc refuses 0
            self._counters[spec.name].inc(value, tags=tags)

    def _observe(self, spec: MetricSpec, value: float, **tags: str) -> None:
        self._histograms[spec.name].observe(value, tags=tags)


class ReadMetrics(_Recorder):
    """What ``ShardReadWorker`` exports: per finished shard, from its outcome."""

    def __init__(self, run_id: str, dataset: str) -> None:
        super().__init__(
            (
                SAMPLES,
                SAMPLES_COUNTED,
                SAMPLES_SKIPPED,
                IMAGES_DECODED,
                IMAGES_SKIPPED,
                SHARDS,
                SHARD_READ_RETRIES,
                CONCEPT_HITS,
            ),
            run_id,
            dataset,
        )

    def shard(self, tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """Pass one shard's tables (``read_shard_rows``) on, recording the shard once its
        outcome row (the last row) arrives and before that row is passed on."""
        text_hits = 0
        for table in tables:
            text_hits += _list_values(table.column("text_concept_ids"))
            outcome = table.column("outcome")[-1].as_py()
            if outcome is not None:
                self.shard_done(ShardOutcome.from_json(outcome), text_hits)
            yield table

    def shard_done(self, outcome: ShardOutcome, text_hits: int = 0) -> None:
        """Record one finished shard.

        Args:
            outcome: How reading it went.
            text_hits: Concept ids in its sample rows' ``text_concept_ids``.
        """
        self._inc(SHARDS, 1, status=outcome.status, reason=outcome.error_reason or "")
        self._inc(SHARD_READ_RETRIES, outcome.read_attempts - 1)
        if outcome.status != SHARD_OK:
            return  # its rows are discarded: nothing else of it counts
        stats = outcome.stats
        self._inc(SAMPLES, stats.samples_read, stage=STAGE_READ)
        self._inc(SAMPLES_COUNTED, stats.samples_counted)
        for reason, n in stats.skipped.items():
            self._inc(SAMPLES_SKIPPED, n, reason=reason)
        self._inc(IMAGES_DECODED, outcome.images_decoded)
        for reason, n in outcome.images_skipped.items():
            self._inc(IMAGES_SKIPPED, n, reason=reason)
        self._inc(CONCEPT_HITS, text_hits, kind="text")


class TagMetrics(_Recorder):
    """What ``ImageTagWorker`` exports: per batch it tags."""

    def __init__(self, run_id: str, dataset: str) -> None:
        super().__init__((SAMPLES, CONCEPT_HITS, BATCH_SECONDS, BATCH_IMAGES), run_id, dataset)

    def batch(self, images: int, seconds: float) -> None:
        """Record one batch of ``images`` images tagged in ``seconds``."""
        self._inc(SAMPLES, images, stage=STAGE_TAG)
        self._observe(BATCH_SECONDS, seconds, stage=STAGE_TAG)
        self._observe(BATCH_IMAGES, images, stage=STAGE_TAG)

    def kept(self, image_concept_ids: pa.Array) -> None:
        """Record the scores kept (at or above the floor) in a batch's ``image_concept_ids``."""
        self._inc(CONCEPT_HITS, _list_values(image_concept_ids), kind="image")


def _list_values(lists: pa.Array | pa.ChunkedArray) -> int:
    """Values in a list column, null lists adding none."""
    return pc.sum(pc.list_value_length(lists)).as_py() or 0
