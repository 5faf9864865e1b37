"""The job on an existing Ray cluster: a real head node plus a worker node on loopback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from shardkit import write_caption_parquet

from freqscan.query import run_query


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    yield cluster
    cluster.shutdown()


@pytest.mark.timeout(300)
def test_count_on_an_existing_cluster_via_ray_address(tmp_path, cluster):
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        write_caption_parquet(
            shards / f"{i}.parquet", [f"a dog number {i}", "a black cat", "a shirt"]
        )
    (tmp_path / "c.txt").write_text("dog\ncat\n")
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "freqscan",
            "count",
            "--input",
            str(shards),
            "--out",
            str(tmp_path / "out"),
            "--concepts",
            str(tmp_path / "c.txt"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    counts = run_query(
        str(tmp_path / "out"), "SELECT concept, text_count FROM frequencies ORDER BY concept"
    )
    assert counts.to_pylist() == [
        {"concept": "cat", "text_count": 3},
        {"concept": "dog", "text_count": 3},
    ]
    config = run_query(str(tmp_path / "out"), "SELECT config FROM runs").to_pylist()[0]["config"]
    assert cluster.address in config
