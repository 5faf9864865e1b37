"""Shared fixtures: the real LAION sample, and one in-process Ray for the whole session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/shardkit.py builds webdataset and parquet shards for the tests.
sys.path.insert(0, str(Path(__file__).parent))

SAMPLE_DIR = Path(__file__).parents[1] / "src" / "freqscan" / "data" / "laion-sample"
SAMPLE_SHARDS = sorted(SAMPLE_DIR.glob("part-*.parquet"))


@pytest.fixture(scope="session")
def ray_local():
    """A 2-CPU in-process Ray shared by every test that runs the job (started once: ~5 s)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def laion_captions() -> list[str]:
    import pyarrow.parquet as pq

    return [
        c for p in SAMPLE_SHARDS for c in pq.read_table(p, columns=["TEXT"])["TEXT"].to_pylist()
    ]
