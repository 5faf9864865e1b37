"""Jobs submitted for real: a local Ray head node with its dashboard (the Jobs API), `ray job
submit` of `freqscan count --config` and of jobs/count.py, and a job that fails."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE_SHARDS
from processkit import processes
from tablekit import assert_same_tables
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.query import run_query

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
# Ray's temp dirs hold unix sockets (at most 107 bytes of path): keep them short, and apart
# from other sessions' Ray.
RAY_TMP = Path("/tmp/raytmp-jobs")
SHARD = str(SAMPLE_SHARDS[0])  # 2,500 real LAION captions
CONCEPTS = "dog\ncat\nshirt\nwoman\nman\ncar\nhouse\nflower\nbook\nchair\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, stat, _ in processes():
        children.setdefault(int(stat[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        found.extend(kids := children.get(todo.pop(), []))
        todo.extend(kids)
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and everything it started, job drivers in their own sessions included
    (never `ray stop`: it would stop every Ray on the machine)."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_local) -> Path:
    """The same count in-process; computed before the head starts, so the two never meet."""
    tmp = tmp_path_factory.mktemp("reference")
    (tmp / "concepts.txt").write_text(CONCEPTS)
    out = tmp / "out"
    args = ["count", "--input", SHARD, "--concepts", str(tmp / "concepts.txt"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--dataset-name", "laion-sample"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


@pytest.fixture(scope="module")
def dashboard(reference) -> Iterator[str]:
    """A real head node (`ray start --head`) on free ports; yields the Jobs API address."""
    RAY_TMP.mkdir(exist_ok=True)
    temp_dir = tempfile.mkdtemp(prefix="h", dir=RAY_TMP)
    port, dashboard_port = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_TMPDIR": str(RAY_TMP),
    }
    env.pop("RAY_ADDRESS", None)
    command = [
        str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--port", str(port), "--num-cpus", "2", "--temp-dir", temp_dir,
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dashboard_port),
        # Fixed defaults that another Ray on this machine may hold.
        "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()),
        "--metrics-export-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()),
    ]  # fmt: skip
    log = open(Path(temp_dir) / "ray-start.log", "w")  # noqa: SIM115 (closed in teardown)
    head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        wait_for_jobs_api(address, head, Path(temp_dir) / "ray-start.log")
        yield address
    finally:
        kill_tree(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_jobs_api(address: str, head: subprocess.Popen, log: Path) -> None:
    # Through the CLI, not raw HTTP: it sends the cluster's auth token when there is one.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert head.poll() is None, log.read_text()
        if ray_job(address, "list").returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"the Jobs API at {address} did not answer:\n{log.read_text()}")


def ray_job(address: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [str(BIN / "ray"), "job", args[0], "--address", address, *args[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def submit(address: str, runtime_env: dict, *entrypoint: str) -> tuple[str, int]:
    """Submit, wait for the end (submit tails the logs), return (submission id, exit code)."""
    job_id = f"freqscan-test-{uuid.uuid4().hex[:8]}"
    done = ray_job(
        address,
        "submit",
        "--submission-id",
        job_id,
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        *entrypoint,
    )
    return job_id, done.returncode


def logs(address: str, job_id: str) -> str:
    return ray_job(address, "logs", job_id).stdout


def status(address: str, job_id: str) -> str:
    """`ray job status` as plain text (it reports on stderr, in colour)."""
    done = ray_job(address, "status", job_id)
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)


def last_json_line(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def write_job_dir(tmp_path: Path) -> Path:
    """A working dir to ship: the config and a concept file it names by a relative path."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "concepts.txt").write_text(CONCEPTS)
    (job_dir / "job.yaml").write_text(
        f"input: [{SHARD}]\nconcepts: concepts.txt\ndataset_name: laion-sample\n"
    )
    return job_dir


def test_freqscan_count_with_a_config_submitted_as_a_ray_job(dashboard, reference, tmp_path):
    job_dir, out = write_job_dir(tmp_path), tmp_path / "out"
    # The working dir is the entrypoint's cwd on the cluster: job.yaml and its relative
    # concepts.txt are found there.
    job_id, code = submit(
        dashboard,
        {"working_dir": str(job_dir)},
        *("python", "-m", "freqscan", "count", "--config", "job.yaml", "--out", str(out)),
    )
    printed = logs(dashboard, job_id)
    assert code == 0, printed
    assert f"Job '{job_id}' succeeded" in status(dashboard, job_id)
    assert "counted 2,500 of 2,500 samples" in printed
    assert_same_tables(str(out), str(reference))
    run = run_query(str(out), "SELECT config FROM runs").to_pylist()[0]
    config = json.loads(run["config"])
    # Recorded absolute: where the job's working dir put concepts.txt on the cluster.
    concepts = Path(config["concepts"])
    assert concepts.is_absolute() and concepts.name == "concepts.txt"
    assert config["runtime"]["address"]
    assert config["config_file"] == "job.yaml"


def test_the_count_entry_point_submitted_with_the_repository_as_working_dir(
    dashboard, reference, tmp_path
):
    job_dir, out = write_job_dir(tmp_path), tmp_path / "out"
    # As jobs/README.md says: `--working-dir .` ships jobs/ (git-ignored paths stay behind);
    # the config lives elsewhere, so its relative concept file is given as a flag, which wins.
    job_id, code = submit(
        dashboard,
        {"working_dir": str(REPO), "excludes": [".git/", "tests/", "docs/", "benchmarks/"]},
        *("python", "jobs/count.py", "--config", str(job_dir / "job.yaml")),
        *("--concepts", str(job_dir / "concepts.txt"), "--out", str(out)),
    )
    printed = logs(dashboard, job_id)
    assert code == 0, printed
    assert f"Job '{job_id}' succeeded" in status(dashboard, job_id)
    line = last_json_line(printed)
    assert line["job"] == "count" and line["status"] == "succeeded", line
    assert line["samples_counted"] == 2500 and line["shards_failed"] == 0
    run = run_query(str(out), "SELECT run_id FROM runs").to_pylist()[0]
    assert line["run_id"] == run["run_id"]
    assert_same_tables(str(out), str(reference))


def test_a_job_with_missing_input_fails_with_a_clear_status_line(dashboard, tmp_path):
    job_dir, missing = write_job_dir(tmp_path), tmp_path / "no-such-shards"
    job_id, code = submit(
        dashboard,
        {"working_dir": str(job_dir)},
        *("python", str(REPO / "jobs" / "count.py"), "--config", "job.yaml"),
        *("--input", str(missing), "--out", str(tmp_path / "out")),
    )
    assert code != 0
    final = status(dashboard, job_id)
    assert f"Job '{job_id}' failed" in final and "failed with exit code 2" in final, final
    line = last_json_line(logs(dashboard, job_id))
    assert line["status"] == "refused" and str(missing) in line["error"], line
    assert not (tmp_path / "out").exists()  # refused before anything was written
