"""The count job from s3:// to s3:// against a real S3 server (moto) on loopback.

Credentials and the endpoint reach every component only through the standard environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), as they would on a cluster. Ray workers get
that environment the way they do on a real node: it is set before Ray starts. The session's
shared Ray (``ray_local``) may already run without it, so this module stops it, starts its own
with the environment in place, and restarts the shared one (same settings) afterwards.

``AWS_ALLOW_HTTP`` is deliberately not set: freqscan derives it for deltalake from the ``http://``
endpoint (``freqscan.storage``).
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_SHARDS, paused_shared_ray, start_shared_ray
from s3kit import BUCKET, KEY_ID, SECRET, aws_environment, moto_server
from shardkit import captions_to_webdataset, split_parquet
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.query import run_query
from freqscan.storage import delta_storage_options, worker_env

ROWS_PER_SHARD = 300
SHARDS = 4

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1, the AWS_* environment naming it, and a Ray that has it."""
    import boto3
    import ray

    with paused_shared_ray(), moto_server() as endpoint:
        with aws_environment(endpoint):
            start_shared_ray()  # its workers inherit the environment set above, as on a node
            try:
                client = boto3.client("s3")
                client.create_bucket(Bucket=BUCKET)
                yield client
            finally:
                ray.shutdown()


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory) -> Path:
    """SHARDS caption parquet shards of ROWS_PER_SHARD real LAION rows, and webdataset copies."""
    base = tmp_path_factory.mktemp("s3-local")
    rows = pq.read_table(SAMPLE_SHARDS[0]).slice(0, ROWS_PER_SHARD * SHARDS)
    split_parquet(rows, base / "captions", ROWS_PER_SHARD, range(SHARDS))
    captions_to_webdataset(
        sorted(str(p) for p in (base / "captions").glob("*.parquet")),
        str(base / "wds"),
        shard_size=ROWS_PER_SHARD * SHARDS // 2,
    )
    return base


@pytest.fixture(scope="module")
def uploaded(s3, local_shards) -> Path:
    for sub in ("captions", "wds"):
        for path in sorted((local_shards / sub).iterdir()):
            s3.upload_file(str(path), BUCKET, f"{sub}/{path.name}")
    return local_shards


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


FREQ_SQL = "SELECT concept, text_count FROM frequencies ORDER BY concept_id"


@pytest.fixture(scope="module")
def runs(uploaded, tmp_path_factory):
    """Counts from s3:// to s3:// and of the local copies; every CLI output is kept."""
    local_out = tmp_path_factory.mktemp("s3-out-local")
    outputs = [
        cli(
            "count",
            "--input",
            f"s3://{BUCKET}/captions",
            "--out",
            f"s3://{BUCKET}/out/pq",
            "--dataset-name",
            "s3-test",
        ),
        cli(
            "count",
            "--input",
            f"s3://{BUCKET}/wds/*.tar",
            "--format",
            "webdataset",
            "--out",
            f"s3://{BUCKET}/out/wds",
        ),
        cli("count", "--input", str(uploaded / "captions"), "--out", str(local_out / "pq")),
    ]
    return {"local": str(local_out / "pq"), "outputs": outputs}


def _frequencies(out: str) -> dict[str, int]:
    return {r["concept"]: r["text_count"] for r in run_query(out, FREQ_SQL).to_pylist()}


def test_counts_from_s3_equal_the_local_count(runs):
    local = _frequencies(runs["local"])
    assert sum(local.values()) > 0
    assert _frequencies(f"s3://{BUCKET}/out/pq") == local
    assert _frequencies(f"s3://{BUCKET}/out/wds") == local
    # And through the CLI, as a user would read them.
    from_s3 = cli("query", f"s3://{BUCKET}/out/pq", FREQ_SQL, "--csv")
    assert from_s3 == cli("query", runs["local"], FREQ_SQL, "--csv")
    shards = run_query(
        f"s3://{BUCKET}/out/pq", "SELECT shard, status, samples_counted, etag FROM shards"
    ).to_pylist()
    assert sorted(r["shard"] for r in shards) == [
        f"s3://{BUCKET}/captions/part-{i:05d}.parquet" for i in range(SHARDS)
    ]
    assert all(r["status"] == "ok" and r["etag"] for r in shards)
    assert sum(r["samples_counted"] for r in shards) == ROWS_PER_SHARD * SHARDS
    hits = run_query(f"s3://{BUCKET}/out/pq", "SELECT count(*) AS n FROM hits").to_pylist()
    assert hits[0]["n"] > 0


def test_a_second_run_to_the_same_s3_output_becomes_current(runs, s3):
    out = f"s3://{BUCKET}/out/pq"
    before = run_query(out, "SELECT count(*) AS n FROM runs").to_pylist()[0]["n"]
    # The same count again (another input or configuration would be refused without --force).
    cli("count", "--input", f"s3://{BUCKET}/captions", "--out", out, "--dataset-name", "s3-test")
    assert run_query(out, "SELECT count(*) AS n FROM runs").to_pylist()[0]["n"] == before + 1
    assert _frequencies(out) == _frequencies(runs["local"])
    # Every commit was a new log entry: none was overwritten (deltalake's conditional put).
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/pq/runs/_delta_log/")["Contents"]
    ]
    assert sorted(k.rsplit("/", 1)[1] for k in keys if k.endswith(".json")) == [
        f"{v:020d}.json" for v in range(before + 1)
    ]


def test_credentials_never_reach_outputs_or_the_terminal(runs, s3):
    texts = list(runs["outputs"])
    for out in (f"s3://{BUCKET}/out/pq", f"s3://{BUCKET}/out/wds", runs["local"]):
        for view in ("frequencies", "shards", "hits", "runs", "shard_counts"):
            texts.append(str(run_query(out, f"SELECT * FROM {view}").to_pylist()))
        texts.append(cli("query", out, "SELECT * FROM runs", "--csv"))
        top = run_query(out, f"{FREQ_SQL.replace('concept_id', 'text_count DESC')} LIMIT 1")
        texts.append(cli("show", out, top.to_pylist()[0]["concept"], "--examples", "2"))
    # Every byte freqscan wrote to the bucket (Delta logs, Parquet files).
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET, Prefix="out/"):
        for obj in page["Contents"]:
            body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            if obj["Key"].endswith(".parquet"):
                body = str(pq.read_table(io.BytesIO(body)).to_pylist()).encode() + body
            texts.append(body.decode("utf-8", "replace"))
    for secret in (KEY_ID, SECRET):
        assert not any(secret in t for t in texts), secret


def test_an_object_deleted_after_listing_is_a_failed_shard(uploaded, s3, monkeypatch):
    import freqscan.runtime.pipeline as pipeline

    for i in range(3):
        s3.upload_file(
            str(uploaded / "captions" / f"part-{i:05d}.parquet"),
            BUCKET,
            f"vanishing/part-{i:05d}.parquet",
        )
    real_list = pipeline.list_shards

    def list_then_delete(inputs, format):
        shards = real_list(inputs, format)
        s3.delete_object(Bucket=BUCKET, Key="vanishing/part-00001.parquet")
        return shards

    monkeypatch.setattr(pipeline, "list_shards", list_then_delete)
    out = f"s3://{BUCKET}/out/vanishing"
    output = cli("count", "--input", f"s3://{BUCKET}/vanishing", "--out", out)
    assert "failed shard" in output and "not_found" in output
    rows = run_query(
        out, "SELECT shard, status, error_reason FROM shards ORDER BY shard"
    ).to_pylist()
    assert [(r["status"], r["error_reason"]) for r in rows] == [
        ("ok", None),
        ("failed", "not_found"),
        ("ok", None),
    ]
    assert rows[1]["shard"] == f"s3://{BUCKET}/vanishing/part-00001.parquet"
    run = run_query(out, "SELECT shards_ok, shards_failed, samples_counted FROM runs").to_pylist()
    assert run == [{"shards_ok": 2, "shards_failed": 1, "samples_counted": 2 * ROWS_PER_SHARD}]


def test_missing_s3_input_is_refused_before_any_work(s3):
    result = CliRunner().invoke(
        app, ["count", "--input", f"s3://{BUCKET}/nothing-here/", "--out", f"s3://{BUCKET}/o"]
    )
    assert result.exit_code == 2
    assert "nothing-here" in result.output and SECRET not in result.output


@pytest.mark.parametrize(
    ("uri", "env", "expected"),
    [
        ("/tmp/out/runs", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, None),
        ("gs://b/out/runs", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, None),
        ("s3://b/out/runs", {}, None),
        ("s3://b/out/runs", {"AWS_ENDPOINT_URL": "https://minio.example"}, None),
        (
            "s3://b/out/runs",
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"},
            {"AWS_ALLOW_HTTP": "true"},
        ),
        ("s3://b/out/runs", {"AWS_ENDPOINT_URL": "http://x:9", "AWS_ALLOW_HTTP": "false"}, None),
        (
            "s3://b/out/runs",
            {"AWS_ENDPOINT_URL_S3": "http://x:9", "AWS_SECRET_ACCESS_KEY": SECRET},
            {"AWS_ENDPOINT_URL": "http://x:9", "AWS_ALLOW_HTTP": "true"},
        ),
    ],
)
def test_delta_storage_options_add_only_what_deltalake_cannot_derive(uri, env, expected):
    got = delta_storage_options(uri, env)
    assert got == expected
    assert SECRET not in str(got)


def test_worker_env_names_the_store_but_never_the_credentials():
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": "token",
    }
    assert worker_env(env) == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
