"""The recount CronJob's shell script (cluster/recount-cronjob.yaml), run by /bin/sh against a
fake ``kubectl`` that plays a RayJob's life: the exit code a scheduler sees must be recount.py's
(0 done, 2 refused, 1 failed), with recount.py's JSON status line printed.

There is no Kubernetes here; the fake answers exactly the calls the script makes and records
them, so a changed script that calls kubectl differently fails here rather than on a cluster.
The status lines are made by jobs/_status.py itself, so a change of their format is seen too;
one test makes them by running jobs/recount.py on a real output whose run had failed shards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from shardkit import truncate_file, write_webdataset_shard
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.query import run_query

ROOT = Path(__file__).parents[1]
MANIFEST = ROOT / "cluster" / "recount-cronjob.yaml"
CREATED = "rayjob.ray.io/freqscan-recount-cc3m-x7k2p"

# Answers kubectl's calls from a scenario file; logs each call as one JSON line.
FAKE_KUBECTL = """\
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as log:
    log.write(json.dumps(args) + "\\n")
with open(os.environ["FAKE_SCENARIO"]) as f:
    scenario = json.load(f)
state_file = os.environ["FAKE_SCENARIO"] + ".polls"
if args[:1] == ["create"]:
    with open(args[args.index("-f") + 1]) as f:
        job = f.read()
    assert "kind: RayJob" in job and "generateName: freqscan-recount-cc3m-" in job
    print(scenario["created"])
elif args[:1] == ["get"] and args[-1] == "jsonpath={.status.jobDeploymentStatus}":
    polls = int(open(state_file).read()) if os.path.exists(state_file) else 0
    open(state_file, "w").write(str(polls + 1))
    answer = scenario["deployment"][polls]
    if answer is None:
        sys.exit("Unable to connect to the server: i/o timeout")
    print(answer, end="")
elif args[:1] == ["get"] and args[-1] == "jsonpath={.status.jobStatus}":
    print(scenario["job_status"], end="")
elif args[:1] == ["logs"]:
    if scenario["log"] is None:
        sys.exit('Error from server (NotFound): jobs.batch "x" not found')
    print(scenario["log"])
elif args[:1] == ["delete"]:
    print(args[1] + " deleted")
else:
    sys.exit("fake kubectl: unexpected call " + " ".join(args))
"""


def cron_script() -> tuple[str, str, str]:
    """(the container's script, its config map mount path, the RayJob the config map holds)."""
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    (cron,) = [d for d in docs if d["kind"] == "CronJob"]
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    return script, container["volumeMounts"][0]["mountPath"], configmap["data"]["rayjob.yaml"]


def status_line(capsys: pytest.CaptureFixture[str], **fields: object) -> str:
    """The line jobs/_status.py prints for a recount that ended with ``fields``."""
    spec = importlib.util.spec_from_file_location("_status", ROOT / "jobs" / "_status.py")
    assert spec and spec.loader
    status = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(status)
    code = status.run_job("recount", lambda: dict(fields), out="s3://b/cc3m")
    line = capsys.readouterr().out.strip()
    assert code == {"refused": 2, "failed": 1}.get(str(fields["status"]), 0)
    return line


def run_cron(tmp_path: Path, scenario: dict[str, object]) -> tuple[int, str, list[list[str]]]:
    """Run the CronJob's script with a fake kubectl and an instant sleep; return its exit code,
    stdout and the kubectl calls it made."""
    script, mount, rayjob = cron_script()
    mounted = tmp_path / "configmap"
    mounted.mkdir()
    (mounted / "rayjob.yaml").write_text(rayjob)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
    (bin_dir / "sleep").write_text('#!/bin/sh\necho "slept $1" >> "$FAKE_SLEEPS"\n')
    for tool in ("kubectl", "sleep"):
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "scenario.json").write_text(json.dumps({"created": CREATED, **scenario}))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_SCENARIO": str(tmp_path / "scenario.json"),
        "FAKE_CALLS": str(tmp_path / "calls.jsonl"),
        "FAKE_SLEEPS": str(tmp_path / "sleeps"),
    }
    done = subprocess.run(
        ["/bin/sh", "-c", script.replace(f"{mount}/", f"{mounted}/")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    return done.returncode, done.stdout, calls


@pytest.mark.parametrize(
    ("deployment", "job_status", "fields", "exit_code"),
    [
        # Waits through the RayJob's start and one API error, then ends as recount.py did.
        (["Initializing", "Running", None, "Running", "Complete"], "SUCCEEDED",
         {"status": "updated", "run_id": "r2"}, 0),
        (["Complete"], "SUCCEEDED", {"status": "unchanged"}, 0),
        (["Running", "Failed"], "FAILED", {"status": "refused", "error": "output busy"}, 2),
        (["Failed"], "FAILED", {"status": "failed", "error": "3 shards failed"}, 1),
    ],
)  # fmt: skip
def test_the_cronjob_exits_as_recount_did(
    tmp_path, capsys, deployment, job_status, fields, exit_code
):
    line = status_line(capsys, **fields)
    log = f"2026-11-25 03:00:01 INFO -- Job submitted\nrecount: plan ready\n{line}\n"
    log += "------------------------------------------\nJob 'raysubmit_x' succeeded"
    code, out, calls = run_cron(
        tmp_path, {"deployment": deployment, "job_status": job_status, "log": log}
    )
    assert code == exit_code, out
    assert out.splitlines() == [f"created {CREATED}", line]
    polls = len(deployment)
    assert calls == [
        ["create", "-f", str(tmp_path / "configmap" / "rayjob.yaml"), "-o", "name"],
        *[["get", CREATED, "-o", "jsonpath={.status.jobDeploymentStatus}"]] * polls,
        ["get", CREATED, "-o", "jsonpath={.status.jobStatus}"],
        ["logs", "job/freqscan-recount-cc3m-x7k2p"],
        ["delete", CREATED, "--wait=false"],
    ]
    sleeps = tmp_path / "sleeps"
    assert (sleeps.read_text().splitlines() if sleeps.exists() else []) == ["slept 30"] * (
        polls - 1
    )


def test_a_rayjob_that_never_ran_fails_the_cronjob_and_says_why(tmp_path):
    # The operator refused the RayJob: no submitter Job, so no log and no status line.
    code, out, calls = run_cron(
        tmp_path, {"deployment": ["ValidationFailed"], "job_status": "", "log": None}
    )
    assert code == 1
    assert out.splitlines() == [f"created {CREATED}", "no status line from recount.py"]
    assert calls[-1] == ["delete", CREATED, "--wait=false"]


def recount_job(monkeypatch: pytest.MonkeyPatch):
    """jobs/recount.py as a module, importing its _status as it does when run."""
    monkeypatch.syspath_prepend(str(ROOT / "jobs"))
    spec = importlib.util.spec_from_file_location("recount_job", ROOT / "jobs" / "recount.py")
    assert spec and spec.loader
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
@pytest.mark.timeout(600)
def test_failed_shards_of_the_previous_run_leave_the_next_recount_unchanged(
    tmp_path, capsys, monkeypatch
):
    shards, out = tmp_path / "shards", tmp_path / "out"
    shards.mkdir()

    def write_shard(i: int) -> None:
        samples = [
            {"key": f"{i:05d}{j:04d}", "txt": "a dog on a sofa", "jpg": b"x"} for j in range(5)
        ]
        write_webdataset_shard(shards / f"{i:05d}.tar", samples)

    write_shard(0)
    write_shard(1)
    write_webdataset_shard(
        shards / "00002.tar",
        [{"key": f"00002{j:04d}", "txt": "a cat", "jpg": b"x" * 4096} for j in range(20)],
    )
    truncate_file(shards / "00002.tar", 30_000)
    (tmp_path / "concepts.txt").write_text("dog\ncat\nsofa\n")
    count = ["count", "--input", str(shards), "--out", str(out)]
    result = CliRunner().invoke(app, [*count, "--concepts", str(tmp_path / "concepts.txt")])
    assert result.exit_code == 0 and "truncated_tar" in result.output, result.output

    # The scheduled recount once a shard arrived, then again with nothing new.
    write_shard(3)
    job, lines = recount_job(monkeypatch), []
    for _ in range(2):
        assert job.main([str(out)]) == 0
        lines.append(capsys.readouterr().out.strip().splitlines()[-1])
    updated, unchanged = map(json.loads, lines)
    assert (updated["status"], updated["added"], updated["shards_failed"]) == ("updated", 1, 1)
    assert {k: unchanged[k] for k in updated if k not in ("seconds",)} == {
        "job": "recount",
        "out": str(out),
        "status": "unchanged",
        "parent_run_id": updated["run_id"],
        "run_id": None,
        "added": 0,
        "changed": 0,
        "removed": 0,
        "unchanged": 4,
        "shards_failed": 1,
    }
    assert len(run_query(str(out), "SELECT run_id FROM runs").to_pylist()) == 2

    for name, line in zip(("updated", "unchanged"), lines, strict=True):
        (tmp_path / name).mkdir()
        log = f"recount: plan ready\n{line}\n------------------------------------------\n"
        code, printed, _ = run_cron(
            tmp_path / name,
            {"deployment": ["Complete"], "job_status": "SUCCEEDED", "log": log + "succeeded"},
        )
        assert code == 0 and printed.splitlines() == [f"created {CREATED}", line]
