"""A shard whose read fails transiently (object briefly missing, store error) is read again with
backoff and counts exactly as one undisturbed read; data defects and changed objects are not
retried. Faults come from a flaky in-memory fsspec store and from a proxy in front of a real
S3 server (moto); the production path (listing, open_shard, the readers) reads them."""

from __future__ import annotations

import io
import os
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_SHARDS
from fsspec.implementations.memory import MemoryFileSystem
from s3kit import BUCKET, aws_environment, fault_proxy, moto_server
from shardkit import truncate_file, write_webdataset_shard
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.config import ConfigError, RuntimeConfig, SourceConfig
from freqscan.counting.shard import SAMPLE_ROWS, ShardOutcome, read_shard_rows
from freqscan.records import SHARD_FAILED, SHARD_OK, Sample, ShardInfo, ShardReadError
from freqscan.sources import list_shards
from freqscan.sources.files import changed_since_listing
from freqscan.text.keys import CaptionKeys

SAMPLES = 5000  # over two TEXT_CHUNKs (2048)


def search(samples: list[Sample]) -> list[tuple[list[int], CaptionKeys]]:
    """Concept 1 in every caption with "dog", concept 2 with "cat"."""
    return [
        ([i for i, word in ((1, "dog"), (2, "cat")) if word in s.caption], CaptionKeys(frozenset()))
        for s in samples
    ]


class Recorder:
    """A ``sleep`` that records the delays instead of waiting, and runs a hook between reads."""

    def __init__(self, between_reads=None) -> None:
        self.delays: list[float] = []
        self._between_reads = between_reads

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self._between_reads is not None:
            self._between_reads()


@dataclass
class Fault:
    """What the flaky store does to the opens of one object, in order.

    Args:
        failed_opens: The first opens raise ``open_error``.
        open_error: See ``failed_opens``.
        drops: The next opens return a file whose ``drop_on_read``-th read raises
            ConnectionResetError, like a connection dropped mid-stream.
        drop_on_read: See ``drops``.
    """

    failed_opens: int = 0
    open_error: type[OSError] = FileNotFoundError
    drops: int = 0
    drop_on_read: int = 1
    opens: int = 0
    dropped: int = 0


class FlakyFileSystem(MemoryFileSystem):
    """An in-memory store (protocol ``flaky://``) that fails the opens and reads of objects."""

    protocol = "flaky"
    store: dict[str, Any] = {}
    pseudo_dirs = [""]
    faults: dict[str, Fault] = {}

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("flaky://"))

    def _open(self, path, mode="rb", **kwargs):
        path = self._strip_protocol(path)
        fault = self.faults.get(path)
        if fault is None or "r" not in mode:
            return super()._open(path, mode, **kwargs)
        fault.opens += 1
        if fault.opens <= fault.failed_opens:
            raise fault.open_error(path)
        f = super()._open(path, mode, **kwargs)
        if fault.opens <= fault.failed_opens + fault.drops:
            return _DroppingFile(f.getvalue(), fault)
        return f


class _DroppingFile(io.BytesIO):
    def __init__(self, data: bytes, fault: Fault) -> None:
        super().__init__(data)
        self._fault = fault
        self._reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self._reads += 1
        if self._reads == self._fault.drop_on_read:
            self._fault.dropped += 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().read(size)


fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


@pytest.fixture
def flaky() -> Iterator[FlakyFileSystem]:
    yield fsspec.filesystem("flaky")
    FlakyFileSystem.store.clear()
    FlakyFileSystem.faults.clear()


def inject(flaky: FlakyFileSystem, shard: ShardInfo, fault: Fault) -> Fault:
    flaky.faults[flaky._strip_protocol(shard.path)] = fault
    return fault


def webdataset_bytes(tmp_path, samples: int = SAMPLES) -> bytes:
    """A tar of ``samples`` samples with dog/cat/no-hit captions, empty ones and a duplicate."""
    captions = ["a dog on a sofa", "two cats", "an empty room", "", "a dog and a cat"]
    rows = [
        {"key": f"{i:09d}", "txt": captions[i % len(captions)], "json": {"url": f"http://x/{i}"}}
        for i in range(samples)
    ]
    rows.append(dict(rows[1]))  # a duplicate key: skipped
    path = tmp_path / "shard.tar"
    write_webdataset_shard(path, rows)
    return path.read_bytes()


def parquet_bytes(tmp_path) -> bytes:
    path = tmp_path / "shard.parquet"
    pq.write_table(pq.read_table(SAMPLE_SHARDS[0]), path)
    return path.read_bytes()


SHARD_BYTES = {"webdataset": webdataset_bytes, "parquet": parquet_bytes}
EXTENSION = {"webdataset": "tar", "parquet": "parquet"}


def put_shard(flaky: FlakyFileSystem, tmp_path, format: str) -> tuple[ShardInfo, SourceConfig]:
    """Store a shard of the format on the flaky store and list it."""
    path = f"/{format}/00000.{EXTENSION[format]}"
    flaky.pipe_file(path, SHARD_BYTES[format](tmp_path))
    (shard,) = list_shards([f"flaky:///{format}"], format)
    return shard, SourceConfig(input=(shard.path,), format=format)


def read(shard, source, **kwargs) -> tuple[list[dict[str, Any]], ShardOutcome]:
    """Sample rows and outcome of one read_shard_rows call."""
    return split(list(read_shard_rows(shard, source, search, **kwargs)))


def split(tables: list[pa.Table]) -> tuple[list[dict[str, Any]], ShardOutcome]:
    rows = [r for t in tables[:-1] for r in t.to_pylist()]
    assert all(t.schema == SAMPLE_ROWS for t in tables)
    assert tables[-1].num_rows == 1 and all(r["outcome"] is None for r in rows)
    return rows, ShardOutcome.from_json(tables[-1].column("outcome")[0].as_py())


def assert_within_jitter(delays: list[float], expected: list[float]) -> None:
    assert len(delays) == len(expected)
    for got, want in zip(delays, expected, strict=True):
        assert 0.9 * want <= got <= want, (delays, expected)


@pytest.mark.parametrize("format", ["webdataset", "parquet"])
def test_an_object_missing_for_two_opens_is_read_on_the_third(flaky, tmp_path, format):
    shard, source = put_shard(flaky, tmp_path, format)
    clean_rows, clean = read(shard, source)
    inject(flaky, shard, Fault(failed_opens=2))
    sleep = Recorder()

    rows, outcome = read(shard, source, retries=3, backoff_s=0.5, sleep=sleep)

    assert (outcome.status, outcome.read_attempts, outcome.error_reason) == (SHARD_OK, 3, None)
    assert rows == clean_rows and len(rows) > 0
    assert outcome.rows == clean.rows == len(rows)
    assert outcome.stats == clean.stats
    assert_within_jitter(sleep.delays, [0.5, 1.0])


@pytest.mark.parametrize("format", ["webdataset", "parquet"])
def test_a_connection_dropped_mid_stream_is_read_again_without_double_counting(
    flaky, tmp_path, format
):
    shard, source = put_shard(flaky, tmp_path, format)
    clean_rows, clean = read(shard, source)
    # tarfile reads the stream in RECORDSIZE blocks: dropping 60% into the tar is past the
    # first 2048-sample chunk. pyarrow reads the footer, then every column chunk at once: read
    # 2 is the data.
    drop_on_read = shard.size * 3 // 5 // tarfile.RECORDSIZE if format == "webdataset" else 2
    fault = inject(flaky, shard, Fault(drops=1, drop_on_read=drop_on_read))
    dropped_before = []
    sleep = Recorder()
    tables = []
    for table in read_shard_rows(shard, source, search, retries=3, backoff_s=0.01, sleep=sleep):
        dropped_before.append(fault.dropped)
        tables.append(table)
    rows, outcome = split(tables)

    assert fault.dropped == 1 and len(sleep.delays) == 1
    if format == "webdataset":
        assert dropped_before[0] == 0 and dropped_before[-1] == 1, "rows came before the drop"
    assert (outcome.status, outcome.read_attempts) == (SHARD_OK, 2)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == outcome.rows == clean.rows
    assert rows == clean_rows  # the retry picks up after the rows already yielded
    assert outcome.stats == clean.stats
    if format == "webdataset":
        assert clean.stats.samples_read == SAMPLES + 1
        assert clean.stats.skipped == Counter({"empty_caption": 1000, "duplicate_key": 1})
        assert clean.rows == 3000


@pytest.mark.parametrize("format", ["webdataset", "parquet"])
def test_a_dropped_connection_is_a_storage_error_not_a_corrupt_shard(flaky, tmp_path, format):
    shard, source = put_shard(flaky, tmp_path, format)
    inject(flaky, shard, Fault(drops=1, drop_on_read=2))
    sleep = Recorder()

    _, outcome = read(shard, source, retries=0, sleep=sleep)

    assert (outcome.status, outcome.error_reason, outcome.read_attempts) == (
        SHARD_FAILED,
        "storage_error",
        1,
    )
    assert "ConnectionResetError" in outcome.error and "gave up after 1 attempt)" in outcome.error
    assert sleep.delays == []


@pytest.mark.parametrize(
    ("error", "reason", "transient"),
    [
        (FileNotFoundError, "not_found", True),
        (ConnectionRefusedError, "storage_error", True),
        (TimeoutError, "storage_error", True),
        (PermissionError, "unreadable", False),
        (IsADirectoryError, "unreadable", False),
    ],
)
def test_open_errors_map_to_reasons_and_only_transient_ones_are_retried(
    flaky, tmp_path, error, reason, transient
):
    shard, source = put_shard(flaky, tmp_path, "parquet")
    clean_rows, _ = read(shard, source)
    inject(flaky, shard, Fault(failed_opens=1, open_error=error))
    _, once = read(shard, source, retries=0)
    assert (once.status, once.error_reason) == (SHARD_FAILED, reason)

    inject(flaky, shard, Fault(failed_opens=1, open_error=error))
    rows, outcome = read(shard, source, retries=1, backoff_s=0.01, sleep=Recorder())

    if transient:
        assert (outcome.status, outcome.read_attempts) == (SHARD_OK, 2) and rows == clean_rows
    else:
        assert (outcome.status, outcome.error_reason, outcome.read_attempts) == (
            SHARD_FAILED,
            reason,
            1,
        )


def test_a_permanently_missing_object_fails_after_every_retry_with_doubling_delays(flaky, tmp_path):
    shard, source = put_shard(flaky, tmp_path, "webdataset")
    flaky.rm(shard.path)
    sleep = Recorder()

    rows, outcome = read(shard, source, retries=7, backoff_s=1.0, sleep=sleep)

    assert rows == []
    assert (outcome.status, outcome.error_reason, outcome.read_attempts) == (
        SHARD_FAILED,
        "not_found",
        8,
    )
    assert outcome.error.endswith("(gave up after 8 attempts)")
    # Doubling from 1 s, capped at 30 s.
    assert_within_jitter(sleep.delays, [1, 2, 4, 8, 16, 30, 30])


def test_a_truncated_tar_is_not_retried(tmp_path):
    path = tmp_path / "00000.tar"
    path.write_bytes(webdataset_bytes(tmp_path, samples=40))
    truncate_file(path, os.path.getsize(path) * 2 // 3)
    (shard,) = list_shards([str(path)], "webdataset")
    sleep = Recorder()

    _, outcome = read(shard, SourceConfig(input=(str(path),), format="webdataset"), sleep=sleep)

    assert (outcome.status, outcome.error_reason, outcome.read_attempts) == (
        SHARD_FAILED,
        "truncated_tar",
        1,
    )
    assert sleep.delays == [] and "attempt" not in outcome.error


def test_an_object_whose_size_changes_between_reads_fails_as_changed(flaky, tmp_path):
    shard, source = put_shard(flaky, tmp_path, "webdataset")
    inject(flaky, shard, Fault(failed_opens=1))
    smaller = webdataset_bytes(tmp_path, samples=10)
    sleep = Recorder(lambda: flaky.pipe_file(shard.path, smaller))

    rows, outcome = read(shard, source, retries=3, backoff_s=0.01, sleep=sleep)

    assert (outcome.status, outcome.error_reason, outcome.read_attempts) == (
        SHARD_FAILED,
        "changed_during_read",
        1,
    )
    assert f"size {shard.size} -> {len(smaller)}" in outcome.error
    assert "not_found" in outcome.error and len(sleep.delays) == 1 and rows == []


def test_changed_since_listing_compares_size_and_mtime_of_a_local_file(tmp_path):
    path = tmp_path / "00000.tar"
    path.write_bytes(webdataset_bytes(tmp_path, samples=3))
    (shard,) = list_shards([str(path)], "webdataset")
    assert changed_since_listing(shard) is None
    os.utime(path, (shard.mtime + 60, shard.mtime + 60))
    assert changed_since_listing(shard) == f"mtime {shard.mtime} -> {shard.mtime + 60}"
    path.unlink()
    assert changed_since_listing(shard) is None  # gone: the next open says so


def test_transient_reasons_and_outcome_json():
    assert ShardReadError("not_found", "x").transient
    assert ShardReadError("storage_error", "x").transient
    for reason in ("truncated_tar", "unreadable", "missing_column", "changed_during_read"):
        assert not ShardReadError(reason, "x").transient
    outcome = ShardOutcome("s.tar", rows=3, read_attempts=4)
    assert ShardOutcome.from_json(outcome.to_json()) == outcome


def test_retry_settings_are_validated_and_reach_the_cli(tmp_path):
    assert (RuntimeConfig().read_retries, RuntimeConfig().retry_backoff_s) == (3, 1.0)
    for bad in ({"read_retries": -1}, {"retry_backoff_s": -0.5}, {"retry_backoff_s": float("nan")}):
        with pytest.raises(ConfigError):
            RuntimeConfig(**bad)
    result = CliRunner().invoke(app, ["count", "--read-retries", "-1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "read_retries must be >= 0" in result.output
    help_text = CliRunner().invoke(app, ["count", "--help"], env={"COLUMNS": "200"}).output
    assert "--read-retries" in help_text and "--retry-backoff" in help_text


# Against a real S3 server through a proxy that fails chosen GETs.

ROWS_PER_SHARD = 300


@pytest.fixture(scope="module")
def s3_proxy(tmp_path_factory):
    """Caption parquet shards on moto; s3fs reaches it through a FaultProxy (AWS_* env)."""
    import boto3

    local = tmp_path_factory.mktemp("retry-shards")
    rows = pq.read_table(SAMPLE_SHARDS[0])
    with moto_server() as endpoint, fault_proxy(endpoint) as proxy:
        # botocore would retry a 503 itself; one attempt makes every fault reach freqscan.
        with aws_environment(proxy.endpoint, AWS_MAX_ATTEMPTS="1"):
            client = boto3.client("s3", endpoint_url=endpoint)  # uploads go around the proxy
            client.create_bucket(Bucket=BUCKET)
            for i in range(3):
                path = local / f"part-{i:05d}.parquet"
                pq.write_table(rows.slice(i * ROWS_PER_SHARD, ROWS_PER_SHARD), path)
                client.upload_file(str(path), BUCKET, f"retries/part-{i:05d}.parquet")
            yield proxy, client, local


def s3_shards() -> tuple[list[ShardInfo], SourceConfig]:
    shards = list_shards([f"s3://{BUCKET}/retries"], "parquet")
    return shards, SourceConfig(input=(f"s3://{BUCKET}/retries",), format="parquet")


def test_s3_objects_missing_for_two_gets_read_ok_with_the_direct_rows(s3_proxy):
    proxy, _, local = s3_proxy
    shards, source = s3_shards()
    assert all(s.etag for s in shards)  # the fingerprint compared before each retry
    shard = shards[0]
    key = "retries/part-00000.parquet"
    direct_rows, direct = read(shard, source, retries=0)
    assert direct.status == SHARD_OK and direct.rows > 0
    assert direct.stats.samples_read == ROWS_PER_SHARD
    proxy.fail_gets(BUCKET, key, times=2, status=404)
    sleep = Recorder()

    rows, outcome = read(shard, source, retries=3, backoff_s=0.01, sleep=sleep)

    assert proxy.faulted["GET", f"/{BUCKET}/{key}"] == 2
    assert (outcome.status, outcome.read_attempts) == (SHARD_OK, 3)
    assert rows == direct_rows and outcome.rows == direct.rows
    assert outcome.stats == direct.stats
    assert len(sleep.delays) == 2
    # The same rows as the local copy of the shard, read with no store in between.
    local_path = str(local / "part-00000.parquet")
    (local_shard,) = list_shards([local_path], "parquet")
    local_rows, _ = read(local_shard, SourceConfig(input=(local_path,), format="parquet"))
    assert [{**r, "shard": None} for r in rows] == [{**r, "shard": None} for r in local_rows]


def test_s3_object_failing_beyond_the_retry_budget_fails_with_its_reason(s3_proxy):
    proxy, _, _ = s3_proxy
    shards, source = s3_shards()
    key = "retries/part-00001.parquet"
    proxy.fail_gets(BUCKET, key, times=100, status=503)

    rows, outcome = read(shards[1], source, retries=2, backoff_s=0.01, sleep=Recorder())

    assert proxy.faulted["GET", f"/{BUCKET}/{key}"] == 3  # one GET per read: no hidden retries
    assert (outcome.status, outcome.error_reason, outcome.read_attempts) == (
        SHARD_FAILED,
        "storage_error",
        3,
    )
    assert outcome.error.endswith("(gave up after 3 attempts)") and rows == []
    proxy.fail_gets(BUCKET, key, times=0, status=503)


def test_s3_object_replaced_between_reads_fails_as_changed(s3_proxy):
    proxy, client, local = s3_proxy
    shards, source = s3_shards()
    key = "retries/part-00002.parquet"
    proxy.fail_gets(BUCKET, key, times=1, status=404)
    replace = Recorder(lambda: client.upload_file(str(local / "part-00000.parquet"), BUCKET, key))

    _, outcome = read(shards[2], source, retries=3, backoff_s=0.01, sleep=replace)

    assert (outcome.status, outcome.error_reason, outcome.read_attempts) == (
        SHARD_FAILED,
        "changed_during_read",
        1,
    )
    assert f"etag {shards[2].etag} -> " in outcome.error
