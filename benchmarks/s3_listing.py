"""Object storage: listing 40,000 shards on S3, and a text-only count from S3 vs local disk.

Against a local S3 server (moto, started here in its own process on a loopback port):
  * creates N small ``.tar`` objects (thread pool of boto3 puts),
  * times ``freqscan.sources.listing.list_shards`` on them, directory form and glob form, each
    with a fresh s3fs client (no listing cache),
  * uploads the 10,000 bundled LAION captions (4 parquet shards) and times a text-only count
    (``normalized``) from S3 to S3 and from local disk to local disk, in this one run, after a
    warm-up run that pays for Ray worker start and imports.

    .venv/bin/python benchmarks/s3_listing.py [--objects 40000] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

SAMPLE = Path(__file__).parents[1] / "src" / "freqscan" / "data" / "laion-sample"
# The loopback S3 server the tests use (tests/s3kit.py).
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from s3kit import moto_server  # noqa: E402

BUCKET = "bench"


def create_objects(client, prefix: str, n: int, threads: int) -> float:
    body = b"\0" * 512  # one empty tar block: small, and a plausible shard head
    t0 = time.perf_counter()

    def put(i: int) -> None:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{i:06d}.tar", Body=body)

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(put, range(n), chunksize=64):
            pass
    return time.perf_counter() - t0


def time_listing(uri: str, expected: int) -> float:
    import s3fs

    from freqscan.sources.listing import list_shards

    s3fs.S3FileSystem.clear_instance_cache()  # a fresh client: no cached listing
    t0 = time.perf_counter()
    shards = list_shards([uri], "webdataset")
    seconds = time.perf_counter() - t0
    assert len(shards) == expected, (uri, len(shards))
    assert all(s.etag and s.size == 512 for s in shards)
    return seconds


def time_raw_listing(client, prefix: str, expected: int) -> float:
    """The floor: boto3's ListObjectsV2 pages (1,000 keys each), no freqscan, no s3fs."""
    t0 = time.perf_counter()
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        n += len(page.get("Contents", []))
    seconds = time.perf_counter() - t0
    assert n == expected, n
    return seconds


def count(input_uri: str, out: str) -> dict[str, float]:
    from freqscan.config import CountConfig, RuntimeConfig, SourceConfig
    from freqscan.runtime.pipeline import run_count

    config = CountConfig(
        source=SourceConfig(input=(input_uri,), format="parquet"),
        out=out,
        dataset_name="laion-10k",
        runtime=RuntimeConfig(num_workers=2),
    )
    summary = run_count(config)
    assert summary.samples_read == 10_000 and not summary.failed_shards
    return {
        "run_s": round(summary.seconds, 2),
        "ray_stage_s": round(summary.count_seconds, 2),
        "samples_per_s_run": round(summary.samples_read / summary.seconds, 1),
        "samples_per_s_ray_stage": round(summary.samples_read / summary.count_seconds, 1),
        "text_hits": summary.text_hits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=40_000)
    parser.add_argument("--threads", type=int, default=32, help="Threads creating objects.")
    parser.add_argument("--skip-count", action="store_true")
    parser.add_argument("--json", help="Also write the results here.")
    args = parser.parse_args()

    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "objects": args.objects,
    }
    with moto_server() as endpoint:
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="benchmark-key",
            AWS_SECRET_ACCESS_KEY="benchmark-secret",
            AWS_DEFAULT_REGION="us-east-1",
        )
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", config=Config(max_pool_connections=args.threads))
        client.create_bucket(Bucket=BUCKET)
        results["create_s"] = round(create_objects(client, "shards", args.objects, args.threads), 2)
        results["list_raw_boto3_s"] = round(time_raw_listing(client, "shards/", args.objects), 2)
        results["list_directory_s"] = round(time_listing(f"s3://{BUCKET}/shards", args.objects), 2)
        results["list_glob_s"] = round(time_listing(f"s3://{BUCKET}/shards/*.tar", args.objects), 2)

        if not args.skip_count:
            import ray

            for path in sorted(SAMPLE.glob("part-*.parquet")):
                client.upload_file(str(path), BUCKET, f"laion/{path.name}")
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # after the env
            with tempfile.TemporaryDirectory() as tmp:
                count(str(SAMPLE), f"{tmp}/warm")
                local = count(str(SAMPLE), f"{tmp}/local")
                s3 = count(f"s3://{BUCKET}/laion", f"s3://{BUCKET}/out")
            ray.shutdown()
            assert local["text_hits"] == s3["text_hits"]
            results["count_local_disk"] = local
            results["count_s3"] = s3

    rows = [
        (f"create {args.objects:,} objects ({args.threads} threads)", f"{results['create_s']} s"),
        (
            f"boto3 ListObjectsV2 pages, no freqscan ({args.objects:,})",
            f"{results['list_raw_boto3_s']} s",
        ),
        (f"list_shards, directory form ({args.objects:,})", f"{results['list_directory_s']} s"),
        (f"list_shards, glob *.tar ({args.objects:,})", f"{results['list_glob_s']} s"),
    ]
    for name in ("count_local_disk", "count_s3"):
        if name in results:
            r = results[name]
            rows.append(
                (
                    f"{name}: 10,000 captions, text-only",
                    f"run {r['run_s']} s ({r['samples_per_s_run']}/s), "
                    f"Ray stage {r['ray_stage_s']} s ({r['samples_per_s_ray_stage']}/s)",
                )
            )
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
