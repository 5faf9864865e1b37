"""Adding concepts from stored caption keys vs a full count with them, as a ratio, in one run.

The 10,000 bundled LAION captions are split into 20 caption-parquet shards of 500. The paper's
4,070 concepts are split into A (9 in 10) and B (every 10th, plus 10 of A, which add-concepts
must skip). In one process, after a warm-up count that pays for Ray worker start and imports:
  * a count with A (the run concepts are added to; it keeps the caption keys),
  * ``add_concepts`` of B onto it (reads no shard, parses no caption),
  * a full count with A and B: what adding concepts costs without stored keys,
then checks that the add-concepts output's frequencies, shard_counts and shards equal the full
count's, and reports the bytes of the committed caption_keys and hits files and of the input.

    .venv/bin/python benchmarks/add_concepts.py [--shards 20] [--method normalized] [--json f]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from freqscan.add_concepts import add_concepts
from freqscan.concepts import load_concepts
from freqscan.config import METHODS, CountConfig, RuntimeConfig, SourceConfig, TextConfig
from freqscan.runtime.pipeline import run_count
from freqscan.tables.store import OutputStore

SAMPLE = Path(__file__).parents[1] / "src" / "freqscan" / "data" / "laion-sample"
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from tablekit import comparable_tables  # noqa: E402


def make_shards(directory: Path, shards: int) -> None:
    rows = pa.concat_tables(pq.read_table(p) for p in sorted(SAMPLE.glob("part-*.parquet")))
    per = len(rows) // shards
    directory.mkdir(parents=True)
    for i in range(shards):
        pq.write_table(rows.slice(i * per, per), directory / f"part-{i:05d}.parquet")


def make_concepts(root: Path) -> dict[str, Path]:
    """A: 9 in 10 of the paper's concepts; B: every 10th and 10 of A; AB: A then B's new ones."""
    names = [c.name for c in load_concepts()]
    a = [n for i, n in enumerate(names) if i % 10]
    b = [n for i, n in enumerate(names) if not i % 10] + a[:10]
    files = {"a": a, "b": b, "ab": a + [n for n in b if n not in set(a)]}
    paths = {}
    for name, concepts in files.items():
        paths[name] = root / f"{name}.txt"
        paths[name].write_text("\n".join(concepts) + "\n")
    return paths


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def table_bytes(out: Path, table: str) -> int:
    store = OutputStore(str(out))
    version = json.loads(store.current_run()["table_versions"])[table]
    return sum(f.size for f in store.data_files(table, version))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--method", choices=METHODS, default="normalized")
    parser.add_argument("--json", help="Also write the results here.")
    args = parser.parse_args()

    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_shards(root / "shards", args.shards)
        concepts = make_concepts(root)

        def config(out: str, concepts: Path) -> CountConfig:
            return CountConfig(
                source=SourceConfig(input=(str(root / "shards"),)),
                out=str(root / out),
                dataset_name="laion-sample",
                concepts=str(concepts),
                text=TextConfig(method=args.method),
                runtime=RuntimeConfig(),
            )

        run_count(config("warm-up", concepts["a"]))
        _, count_a = timed(lambda: run_count(config("out", concepts["a"])))
        added, add = timed(lambda: add_concepts(str(root / "out"), str(concepts["b"])))
        _, full = timed(lambda: run_count(config("full", concepts["ab"])))
        got, want = comparable_tables(str(root / "out")), comparable_tables(str(root / "full"))
        assert all(got[t] == want[t] for t in ("frequencies", "shard_counts", "shards"))
        assert len(added.already_counted) == 10
        concepts_a = len(load_concepts(str(concepts["a"])))
        storage = {
            "input_bytes": sum(p.stat().st_size for p in (root / "shards").iterdir()),
            "caption_keys_bytes": table_bytes(root / "out", "caption_keys"),
            "hits_bytes_count_a": table_bytes(root / "out", "hits"),
            "hits_bytes_full_count": table_bytes(root / "full", "hits"),
        }

    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "method": args.method,
        "shards": args.shards,
        "samples": added.samples,
        "concepts_a": concepts_a,
        "concepts_added": len(added.added),
        "count_a_s": round(count_a, 2),
        "add_concepts_s": round(add, 2),
        "full_count_ab_s": round(full, 2),
        "add_concepts_over_full_count": round(add / full, 3),
        "tables_equal_full_count": True,
        **storage,
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
