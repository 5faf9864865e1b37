"""Shared fixtures: the real LAION sample, and one in-process Ray for the whole session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# tests/shardkit.py builds webdataset and parquet shards for the tests.
sys.path.insert(0, str(Path(__file__).parent))

SAMPLE_DIR = Path(__file__).parents[1] / "src" / "freqscan" / "data" / "laion-sample"
SAMPLE_SHARDS = sorted(SAMPLE_DIR.glob("part-*.parquet"))


def start_shared_ray() -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="session")
def ray_local():
    """A 2-CPU in-process Ray shared by every test that runs the job (started once: ~5 s)."""
    import ray

    start_shared_ray()
    yield ray
    ray.shutdown()


@contextmanager
def paused_shared_ray() -> Iterator[None]:
    """Stop the shared Ray (if running) so a test can start its own, and restart it after."""
    import ray

    was_running = ray.is_initialized()
    if was_running:
        ray.shutdown()
    try:
        yield
    finally:
        if was_running:
            ray.shutdown()
            start_shared_ray()


@pytest.fixture(scope="session")
def laion_captions() -> list[str]:
    import pyarrow.parquet as pq

    return [
        c for p in SAMPLE_SHARDS for c in pq.read_table(p, columns=["TEXT"])["TEXT"].to_pylist()
    ]
