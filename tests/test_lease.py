"""The writer lease of an output directory, on local disk and on S3 (moto on loopback)."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from s3kit import moto_server

from freqscan.tables.lease import (
    LEASE_DIR,
    LeaseLostError,
    OutputBusyError,
    OutputLease,
    _LeaseFiles,
)

pytestmark = pytest.mark.timeout(300)

BUCKET = "freqscan-lease"
KEY_ID = "AKIAFREQSCANLEASEKEY"
SECRET = "lEaSe/TeSt+SeCrEt/never-in-a-lease-file-0123"
RACERS = 8


@pytest.fixture(scope="module")
def s3_root() -> Iterator[str]:
    """A moto S3 server, the AWS_* environment naming it, and a bucket: yields ``s3://bucket``."""
    import boto3
    import s3fs

    with moto_server() as endpoint, pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            env.delenv(name, raising=False)
        s3fs.S3FileSystem.clear_instance_cache()  # cached clients keep their old endpoint
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        try:
            yield f"s3://{BUCKET}"
        finally:
            s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path) -> str:
    """A fresh output directory, on local disk or in the moto bucket."""
    if request.param == "local":
        return str(tmp_path / "out")
    return f"{request.getfixturevalue('s3_root')}/{tmp_path.name}/out"


def lease_files(out: str) -> dict[str, bytes]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(f"{out}/{LEASE_DIR}")
    fs.invalidate_cache(root)
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.ls(root, detail=False)}


def test_acquire_release_and_acquire_again(out):
    with OutputLease.acquire(out, "run-a") as first:
        assert first.holder == "run-a"
        first.check()
    second = OutputLease.acquire(out, "run-b")
    assert second.gen == first.gen + 1
    # Only the current generation is kept; it says who holds it and from where, nothing more.
    files = lease_files(out)
    assert sorted(files) == [f"{second.gen:012d}.json"]
    record = json.loads(files[f"{second.gen:012d}.json"])
    assert record["holder"] == "run-b" and record["pid"] > 0 and record["host"]
    second.release()
    second.release()  # idempotent
    assert f"{second.gen:012d}.released" in lease_files(out)


def test_a_held_lease_refuses_a_second_writer_naming_the_holder(out):
    with OutputLease.acquire(out, "run-a"):
        with pytest.raises(OutputBusyError, match="run-a") as refused:
            OutputLease.acquire(out, "run-b")
    message = str(refused.value)
    assert "pid" in message and "heartbeat" in message and "Wait for it to finish" in message
    OutputLease.acquire(out, "run-b").release()  # free again once released


def test_the_heartbeat_keeps_a_live_lease(tmp_path):
    out = str(tmp_path / "out")
    with OutputLease.acquire(out, "run-a", ttl_s=0.4):
        first = json.loads(lease_files(out)["000000000000.json"])["heartbeat_at"]
        time.sleep(1.0)  # well past 0.4 s: only the heartbeat keeps it held
        with pytest.raises(OutputBusyError, match="run-a"):
            OutputLease.acquire(out, "run-b", ttl_s=0.4)
        assert json.loads(lease_files(out)["000000000000.json"])["heartbeat_at"] > first


def test_a_stale_heartbeat_is_taken_over_and_the_old_holder_learns_it(out):
    old = OutputLease.acquire(out, "run-old")  # beats every 30 s
    time.sleep(0.5)
    new = OutputLease.acquire(out, "run-new", ttl_s=0.2)  # for it, 0.5 s without a beat is stale
    with pytest.raises(LeaseLostError, match="run-old lost its writer lease to run run-new"):
        old.check()
    new.check()
    old.release()  # a late release of the old generation frees nothing
    with pytest.raises(OutputBusyError, match="run-new"):
        OutputLease.acquire(out, "run-c")
    new.release()


def _acquire_in_a_process_that_dies(out: str, setup: str = "") -> None:
    """Take the lease in a child process that then exits without releasing it."""
    code = (
        f"{setup}\nimport os\nfrom freqscan.tables.lease import OutputLease\n"
        f"OutputLease.acquire({out!r}, 'run-dead')\nos._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)  # waited for: reaped


def test_a_lease_of_a_dead_process_on_this_host_is_free_at_once(tmp_path):
    out = str(tmp_path / "out")
    _acquire_in_a_process_that_dies(out)
    assert json.loads(lease_files(out)["000000000000.json"])["holder"] == "run-dead"
    with OutputLease.acquire(out, "run-b") as lease:  # its heartbeat is fresh: the pid decides
        assert lease.gen == 1


def test_a_dead_pid_on_another_host_says_nothing_until_the_heartbeat_is_stale(tmp_path):
    out = str(tmp_path / "out")
    elsewhere = "import socket\nsocket.gethostname = lambda: 'another-host'"
    _acquire_in_a_process_that_dies(out, elsewhere)
    with pytest.raises(OutputBusyError, match="run-dead .host another-host"):
        OutputLease.acquire(out, "run-b")
    OutputLease.acquire(out, "run-b", ttl_s=0.01).release()


def meet_before_create(barrier: threading.Barrier) -> Callable[..., bool]:
    """``_LeaseFiles.create`` once every racer has read the lease: the worst race, every time.

    Without it the first racer could take the lease before the others even read it, and they
    would be refused for seeing it held, not by the exclusive create under test.
    """
    create = _LeaseFiles.create

    def create_when_all_have_read(self: _LeaseFiles, name: str, data: bytes) -> bool:
        if name.endswith(".json"):  # generations only: releasing must not wait
            barrier.wait()
        return create(self, name, data)

    return create_when_all_have_read


def race_threads(out: str) -> tuple[list[OutputLease], list[str]]:
    """RACERS threads call acquire at once; returns the leases won and the refusals."""
    start = threading.Barrier(RACERS)
    won: list[OutputLease] = []
    refused: list[str] = []

    def racer(i: int) -> None:
        start.wait()
        try:
            won.append(OutputLease.acquire(out, f"run-{i}"))
        except OutputBusyError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused


@pytest.mark.parametrize(
    "prepare",
    [
        pytest.param(lambda out: None, id="new"),
        pytest.param(lambda out: OutputLease.acquire(out, "run-before").release(), id="released"),
    ],
)
def test_threads_racing_for_a_free_lease_exactly_one_wins(
    out, prepare: Callable[[str], None], monkeypatch
):
    prepare(out)
    monkeypatch.setattr(_LeaseFiles, "create", meet_before_create(threading.Barrier(RACERS)))
    won, refused = race_threads(out)
    assert len(won) == 1 and len(refused) == RACERS - 1
    assert all(won[0].holder in message for message in refused)
    won[0].release()


def _process_racer(out: str, i: int, start, done, results) -> None:
    _LeaseFiles.create = meet_before_create(start)  # this process's own copy of the class
    try:
        lease = OutputLease.acquire(out, f"run-{i}")
    except OutputBusyError as exc:
        results.put((i, str(exc)))
        return
    results.put((i, None))
    done.wait()  # hold it until every racer has tried: a dead holder's lease is free
    lease.release()


def test_processes_racing_for_a_free_lease_exactly_one_wins(tmp_path: Path):
    out = str(tmp_path / "out")
    ctx = multiprocessing.get_context("spawn")
    start, done, results = ctx.Barrier(RACERS), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_process_racer, args=(out, i, start, done, results))
        for i in range(RACERS)
    ]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    done.set()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners = [i for i, refusal in outcomes.items() if refusal is None]
    assert len(winners) == 1
    assert all(f"run-{winners[0]}" in m for m in outcomes.values() if m is not None)


def test_lease_files_on_s3_hold_no_credentials(s3_root):
    out = f"{s3_root}/no-secrets/out"
    with OutputLease.acquire(out, "run-a", ttl_s=0.2):
        time.sleep(0.3)  # a heartbeat rewrote the file at least once
    for data in lease_files(out).values():
        assert KEY_ID.encode() not in data and SECRET.encode() not in data
