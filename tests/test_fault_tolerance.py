"""Exactly once under failure, on a real multi-node Ray cluster on this machine.

Faults are injected in the middle of a run (after the first shard is counted, while every
reader still has shards queued): a worker node is removed and a fresh one joins, as when a spot
node is reclaimed and the autoscaler replaces it; separately, the tagging actor's process is
killed, as when a GPU worker crashes; separately, the whole job is killed and the same command
is run again. Each time the final tables must equal those of an undisturbed run, row for row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_SHARDS, paused_shared_ray
from processkit import kill_session, processes
from shardkit import split_parquet
from tablekit import assert_same_tables

from freqscan.config import CountConfig, RuntimeConfig, SourceConfig, TextConfig
from freqscan.query import run_query
from freqscan.runtime.pipeline import run_count
from freqscan.tables.progress import PROGRESS_DIR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SHARDS = 10
ROWS_PER_SHARD = 500
TAGGED_SHARDS = 6


@pytest.fixture(scope="module")
def caption_shards(tmp_path_factory) -> Path:
    """SHARDS caption parquet shards of real LAION rows."""
    base = tmp_path_factory.mktemp("fault-shards")
    split_parquet(pq.read_table(SAMPLE_SHARDS[0]), base, ROWS_PER_SHARD, range(SHARDS))
    return base


def count_command(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "freqscan", "count", "--input", str(shards), "--out", str(out),
        "--dataset-name", "laion-sample", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(caption_shards, tmp_path_factory) -> Path:
    """An undisturbed count, through the CLI on a local Ray of its own."""
    out = tmp_path_factory.mktemp("fault-reference") / "out"
    done = subprocess.run(
        count_command(caption_shards, out), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture
def cluster():
    """A head node without CPUs (it runs only the driver) and two 1-CPU worker nodes."""
    import ray
    from ray.cluster_utils import Cluster

    with paused_shared_ray():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


class FaultAfter:
    """A progress reporter that injects ``fault`` once ``after`` shards are counted."""

    def __init__(self, after: int, fault) -> None:
        self.after, self.fault = after, fault
        self.total = self.done = 0
        self.fired_at: int | None = None

    def start(self, shards: int, done: int = 0) -> None:
        self.total, self.done = shards, done

    def shard_done(self, samples_read: int, failed: bool = False) -> None:
        self.done += 1
        if self.fired_at is None and self.done >= self.after:
            self.fired_at = self.done
            self.fault()


def text_config(shards: Path, out: Path, address: str) -> CountConfig:
    return CountConfig(
        source=SourceConfig(input=(str(shards),)),
        out=str(out),
        dataset_name="laion-sample",
        text=TextConfig(),
        runtime=RuntimeConfig(address=address),
    )


def test_a_worker_node_lost_mid_run_changes_nothing(cluster, caption_shards, reference, tmp_path):
    def lose_a_node() -> None:
        # Each 1-CPU node holds one reader actor, busy with a shard: losing either loses work.
        cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
        cluster.add_node(num_cpus=1)

    fault = FaultAfter(1, lose_a_node)
    out = tmp_path / "out"
    summary = run_count(text_config(caption_shards, out, cluster.address), fault)
    assert fault.fired_at is not None and fault.fired_at < SHARDS
    assert summary.shards_ok == SHARDS
    assert_same_tables(out, reference)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, laion_captions):
    """Webdataset shards of real photos, a tiny RAM++ checkpoint, and an undisturbed count."""
    from imagekit import tagged_setup

    setup = tagged_setup(
        tmp_path_factory.mktemp("fault-tagged"), laion_captions, samples=48, shards=TAGGED_SHARDS
    )
    setup["reference"] = setup["root"] / "reference"
    command = [sys.executable, "-m", "freqscan", *setup["common"], "--out", str(setup["reference"])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return setup


def test_a_killed_tagging_actor_changes_nothing(cluster, tagged, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from freqscan.cli import app
    from freqscan.runtime.progress import RichProgress

    killed: list[int] = []

    def kill_the_tagger() -> None:
        # Ray names an actor's process after its class: ray::MapWorker(MapBatches(ImageTagWorker));
        # workers are children of their node's raylet (other Rays on this machine are not ours).
        raylets = {n.all_processes["raylet"][0].process.pid for n in cluster.worker_nodes}
        pids = [
            pid
            for pid, stat, cmd in processes()
            if "ImageTagWorker" in cmd and int(stat[1]) in raylets
        ]
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)
        killed.extend(pids)

    fault = FaultAfter(1, kill_the_tagger)

    class ProgressWithFault(RichProgress):  # the CLI's own progress display, plus the fault
        def start(self, shards: int, done: int = 0) -> None:
            super().start(shards, done)
            fault.start(shards, done)

        def shard_done(self, samples_read: int, failed: bool = False) -> None:
            super().shard_done(samples_read, failed)
            fault.shard_done(samples_read, failed)

    monkeypatch.setattr("freqscan.runtime.progress.RichProgress", ProgressWithFault)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [*tagged["common"], "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert killed and fault.fired_at < TAGGED_SHARDS
    assert_same_tables(out, tagged["reference"])


def test_a_killed_job_resumes_when_the_same_command_runs_again(caption_shards, reference, tmp_path):
    out = tmp_path / "out"
    command = count_command(caption_shards, out, "--workers", "1")
    job = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    markers = out / PROGRESS_DIR
    deadline = time.monotonic() + 240
    finished: list[Path] = []
    while len(finished) < 3:
        assert job.poll() is None, job.stdout.read().decode()
        assert time.monotonic() < deadline, "the job never finished 3 shards"
        time.sleep(0.05)
        finished = list(markers.glob("*/shards/*.json"))
    kill_session(job)
    finished = sorted(markers.glob("*/shards/*.json"))
    assert 3 <= len(finished) < SHARDS
    reused = {p.stem for p in finished}
    hits_before = {p.name: p.stat().st_mtime_ns for p in (out / "hits").glob("*.parquet")}

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    run = run_query(str(out), "SELECT * FROM runs").to_pylist()
    assert len(run) == 1 and run[0]["shards_reused"] == len(reused)
    assert run[0]["shards_total"] == SHARDS
    # The finished shards' hits files were kept as they were, not written again.
    hits_after = {p.name: p.stat().st_mtime_ns for p in (out / "hits").glob("*.parquet")}
    kept = {n for n in hits_before if any(r in n for r in reused)}
    assert kept and all(hits_after[n] == hits_before[n] for n in kept)
    assert not (markers / run[0]["run_id"]).exists()
    assert_same_tables(out, reference)
