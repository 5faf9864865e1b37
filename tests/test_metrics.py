"""Job metrics on Ray's real Prometheus endpoint: a real count on the LAION sample (with bad
records and a failed shard) and a tagged count with a tiny RAM++ on CPU export exactly what
their run summaries say, tagged with the run; the recorders, called in a Ray task, export the
read retries and batch histograms they are given.

The endpoint is read after the count has returned, when Ray Data has released its actors: the
values checked are those that outlive the actors that recorded them.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_SHARDS
from imagekit import tagged_setup
from metricskit import metrics_endpoint, samples
from shardkit import truncate_file, write_caption_parquet
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.config import CountConfig, SourceConfig
from freqscan.counting.shard import ShardOutcome
from freqscan.query import run_query
from freqscan.records import ShardStats
from freqscan.runtime.metrics import (
    BATCH_IMAGES_BOUNDARIES,
    BATCH_SECONDS_BOUNDARIES,
    DEFAULT_TAGS,
    METRICS,
)
from freqscan.runtime.pipeline import run_count

pytestmark = pytest.mark.timeout(600)

# Ray reports a worker's metrics every 10 s and when it exits.
SETTLE_S = 60
DATASET = "laion-sample"
# (Prometheus name, tags other than run_id and dataset) -> value
Snapshot = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A local Ray of this module's own, exporting metrics on a loopback port."""
    with metrics_endpoint() as url:
        yield url


def scrape(url: str, run_id: str, dataset: str = DATASET) -> Snapshot:
    """The run's freqscan series, summed over the labels Ray adds (worker, node, ...)."""
    spec_tags = {t for spec in METRICS for t in spec.tags}
    listed = {n for spec in METRICS for n in spec.prometheus_names}
    out: Snapshot = defaultdict(float)
    for s in samples(url):
        if not s.name.startswith("ray_freqscan_") or s.labels.get("run_id") != run_id:
            continue
        assert s.name in listed and s.labels["dataset"] == dataset, s
        tags = frozenset((k, v) for k, v in s.labels.items() if k in spec_tags | {"le"})
        out[s.name, tags] += s.value
    return dict(out)


def _series(
    snapshot: Snapshot, name: str, match: dict[str, str]
) -> Iterator[tuple[dict[str, str], float]]:
    for (n, tags), value in snapshot.items():
        labels = dict(tags)
        if n == name and match.items() <= labels.items():
            yield labels, value


def by_tag(snapshot: Snapshot, name: str, tag: str, **match: str) -> dict[str, float]:
    """``name``'s values per value of ``tag``, over the series whose tags include ``match``."""
    out: dict[str, float] = defaultdict(float)
    for labels, value in _series(snapshot, name, match):
        out[labels.get(tag, "")] += value
    return dict(out)


def total(snapshot: Snapshot, name: str, **match: str) -> float:
    return sum(value for _, value in _series(snapshot, name, match))


def settled(
    url: str, run_id: str, expected: dict[str, object], view: Callable[[Snapshot], object]
) -> Snapshot:
    """Scrape until ``view(snapshot) == expected`` or SETTLE_S pass; the last snapshot."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        snapshot = scrape(url, run_id)
        if view(snapshot) == expected or time.monotonic() > deadline:
            # None at all: the workers were not given the run (runtime/pipeline.py passes it).
            assert snapshot, f"no freqscan series tagged run_id={run_id!r} on {url}"
            return snapshot
        time.sleep(1)


def test_every_metric_is_listed_once_with_the_run_tags():
    names = [n for spec in METRICS for n in spec.prometheus_names]
    assert len(names) == len(set(names))
    assert "ray_freqscan_samples_total" in names
    assert {"ray_freqscan_batch_seconds_bucket", "ray_freqscan_batch_seconds_count"} <= set(names)
    for spec in METRICS:
        assert spec.tag_keys[:2] == DEFAULT_TAGS and spec.description
        assert (spec.kind == "histogram") == bool(spec.boundaries)
    assert BATCH_SECONDS_BOUNDARIES[0] == 0.001 and BATCH_SECONDS_BOUNDARIES[-1] == 60
    for bounds in (BATCH_SECONDS_BOUNDARIES, BATCH_IMAGES_BOUNDARIES):
        assert list(bounds) == sorted(set(bounds))


def _read_view(s: Snapshot) -> dict[str, object]:
    return {
        "samples": total(s, "ray_freqscan_samples_total", stage="read"),
        "counted": total(s, "ray_freqscan_samples_counted_total"),
        "skipped": by_tag(s, "ray_freqscan_samples_skipped_total", "reason"),
        "shards": by_tag(s, "ray_freqscan_shards_total", "status"),
        "failed": by_tag(s, "ray_freqscan_shards_total", "reason", status="failed"),
        "text_hits": total(s, "ray_freqscan_concept_hits_total", kind="text"),
    }


def test_a_count_exports_its_summary(endpoint, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    rows = pq.read_table(SAMPLE_SHARDS[0])
    for i in range(2):
        pq.write_table(rows.slice(i * 1000, 1000), shards / f"part-{i:05d}.parquet")
    write_caption_parquet(
        shards / "part-00002.parquet",
        [b"a dog on a sofa", b"", None, b"a cat \xff\xfe", b"a dog " * 3000, b"two cats"],
    )
    pq.write_table(rows.slice(2000, 500), shards / "part-00003.parquet")
    truncate_file(shards / "part-00003.parquet", 2000)  # fails: not a readable parquet file

    config = CountConfig(
        source=SourceConfig(input=(str(shards),)), out=str(tmp_path / "out"), dataset_name=DATASET
    )
    summary = run_count(config)
    assert summary.shards_ok == 3 and summary.text_hits > 0
    assert set(summary.skipped) >= {"empty_caption", "missing_caption", "invalid_utf8"}
    expected = {
        "samples": summary.samples_read,
        "counted": summary.samples_counted,
        "skipped": dict(summary.skipped),
        "shards": {"ok": summary.shards_ok, "failed": len(summary.failed_shards)},
        "failed": dict(Counter(f["reason"] for f in summary.failed_shards)),
        "text_hits": summary.text_hits,
    }
    assert expected["failed"] == {"unreadable": 1}

    snapshot = settled(endpoint, summary.run_id, expected, _read_view)
    assert _read_view(snapshot) == expected
    # A text-only run tags nothing and retried no read.
    assert {name for name, _ in snapshot} == {
        "ray_freqscan_samples_total",
        "ray_freqscan_samples_counted_total",
        "ray_freqscan_samples_skipped_total",
        "ray_freqscan_shards_total",
        "ray_freqscan_concept_hits_total",
    }


def _tag_view(s: Snapshot) -> dict[str, object]:
    return {
        "tagged": total(s, "ray_freqscan_samples_total", stage="tag"),
        "decoded": total(s, "ray_freqscan_images_decoded_total"),
        "skipped": by_tag(s, "ray_freqscan_images_skipped_total", "reason"),
        "image_hits": total(s, "ray_freqscan_concept_hits_total", kind="image"),
        "batches": total(s, "ray_freqscan_batch_seconds_count", stage="tag"),
        "batch_images": total(s, "ray_freqscan_batch_images_count", stage="tag"),
    }


def test_a_tagged_count_exports_the_tag_stage(endpoint, tmp_path, laion_captions):
    setup = tagged_setup(tmp_path, laion_captions)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, [*setup["common"], "--out", str(out), "--dataset-name", DATASET]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = run_query(str(out), "SELECT run_id, images_decoded FROM runs").to_pylist()[0]
    skipped = run_query(
        str(out),
        "SELECT e.key AS reason, sum(e.value) AS n"
        " FROM (SELECT unnest(map_entries(images_skipped)) AS e FROM shards) GROUP BY 1",
    ).to_pylist()
    hits = run_query(str(out), "SELECT sum(len(image_concept_ids)) AS n FROM hits")
    kept = hits.column("n")[0].as_py()
    assert run["images_decoded"] == 37 and kept > 0

    def done(s: Snapshot) -> dict[str, object]:
        view = _tag_view(s)
        return {k: view[k] for k in ("tagged", "decoded", "skipped", "image_hits")}

    expected = {
        "tagged": run["images_decoded"],
        "decoded": run["images_decoded"],
        "skipped": {r["reason"]: r["n"] for r in skipped},
        "image_hits": kept,
    }
    snapshot = settled(endpoint, run["run_id"], expected, done)
    assert done(snapshot) == expected
    view = _tag_view(snapshot)
    # One latency and one size per batch that held an image (image batch size 8: 37 images
    # take at least 5 batches); every batch is within the last (+Inf) bucket.
    assert view["batches"] == view["batch_images"] >= 5
    assert total(snapshot, "ray_freqscan_batch_seconds_bucket", le="+Inf") == view["batches"]


def test_the_recorders_export_retries_and_batch_histograms(endpoint):
    import ray

    @ray.remote
    def record() -> None:
        from freqscan.runtime.metrics import ReadMetrics, TagMetrics

        read = ReadMetrics("unit-run", DATASET)
        stats = ShardStats(samples_read=4, samples_counted=3, skipped=Counter(duplicate_key=1))
        read.shard_done(ShardOutcome("a", stats=stats, read_attempts=3), text_hits=5)
        read.shard_done(
            ShardOutcome("b", status="failed", error_reason="storage_error", read_attempts=4)
        )
        tag = TagMetrics("unit-run", DATASET)
        tag.batch(images=6, seconds=0.03)
        tag.batch(images=1, seconds=0.002)
        tag.kept(pa.array([[1, 2], None, [3]], pa.list_(pa.int64())))

    ray.get(record.remote())
    expected = {
        "retries": 5.0,
        "shards": {"ok": 1.0, "failed": 1.0},
        "samples": {"read": 4.0, "tag": 7.0},
        "hits": {"text": 5.0, "image": 3.0},
        "seconds": {"0.001": 0.0, "0.0025": 1.0, "0.025": 1.0, "0.05": 2.0, "+Inf": 2.0},
        "images": {"1.0": 1.0, "4.0": 1.0, "8.0": 2.0, "+Inf": 2.0},
    }

    def view(s: Snapshot) -> dict[str, object]:
        seconds = by_tag(s, "ray_freqscan_batch_seconds_bucket", "le")
        images = by_tag(s, "ray_freqscan_batch_images_bucket", "le")
        return {
            "retries": total(s, "ray_freqscan_shard_read_retries_total"),
            "shards": by_tag(s, "ray_freqscan_shards_total", "status"),
            "samples": by_tag(s, "ray_freqscan_samples_total", "stage"),
            "hits": by_tag(s, "ray_freqscan_concept_hits_total", "kind"),
            "seconds": {le: seconds.get(le) for le in expected["seconds"]},
            "images": {le: images.get(le) for le in expected["images"]},
        }

    snapshot = settled(endpoint, "unit-run", expected, view)
    assert view(snapshot) == expected
    assert by_tag(snapshot, "ray_freqscan_shards_total", "reason", status="failed") == {
        "storage_error": 1.0
    }
