"""The 10,000 real LAION captions, read as parquet and as webdataset made from them."""

from __future__ import annotations

import pyarrow.parquet as pq
from conftest import SAMPLE_DIR, SAMPLE_SHARDS
from shardkit import captions_to_webdataset

from freqscan.config import SourceConfig
from freqscan.sources import check_source, read_shard
from freqscan.sources.listing import list_shards


def read_all(inputs: list[str], format: str) -> list:
    config = SourceConfig(input=tuple(inputs), format=format)
    shards = list_shards(config.input, format)
    check_source(shards, config)
    return [sample for shard in shards for sample in read_shard(shard, config)]


def test_the_bundled_parquet_sample(laion_captions):
    assert len(SAMPLE_SHARDS) == 4
    samples = read_all([str(SAMPLE_DIR)], "parquet")
    assert len(samples) == len(laion_captions) == 10_000
    assert [s.caption for s in samples] == laion_captions
    assert all(s.skip is None for s in samples)
    urls = [u for p in SAMPLE_SHARDS for u in pq.read_table(p, columns=["URL"])["URL"].to_pylist()]
    assert [s.url for s in samples] == urls
    assert [s.key for s in samples[2499:2501]] == ["2499", "0"]  # row index within each shard


def test_the_sample_as_webdataset_reads_back_the_same_pairs(tmp_path, laion_captions):
    written = captions_to_webdataset([str(p) for p in SAMPLE_SHARDS], str(tmp_path), 2500)
    assert written == [str(tmp_path / f"0000{i}.tar") for i in range(4)]
    samples = read_all([str(tmp_path / "*.tar")], "webdataset")
    assert [(s.key, s.caption) for s in samples] == [
        (f"{i // 2500:05d}{i % 2500:04d}", c) for i, c in enumerate(laion_captions)
    ]
    from_parquet = read_all([str(SAMPLE_DIR)], "parquet")
    assert [s.url for s in samples] == [s.url for s in from_parquet]
