"""Adding concepts from stored caption keys vs a full count with them, as a ratio, in one run.

Captions only (default): the 10,000 bundled LAION captions are split into 20 caption-parquet
shards of 500. The paper's 4,070 concepts are split into A (9 in 10) and B (every 10th, plus 10
of A, which add-concepts must skip). In one process, after a warm-up count that pays for Ray
worker start and imports:
  * a count with A (the run concepts are added to; it keeps the caption keys),
  * ``add_concepts`` of B onto it (reads no shard, parses no caption),
  * a full count with A and B: what adding concepts costs without stored keys,
then checks that the add-concepts output's frequencies, shard_counts and shards equal the full
count's, and reports the bytes of the committed caption_keys and hits files and of the input.

``--tagged``: the same three runs on webdataset shards of real photos and LAION captions tagged
by a tiny random RAM++ on the CPU (tests/imagekit.py; A = 7 of its 10 concepts, B = the other 3),
where add-concepts reads the shards again and tags their images, and every table, hits
included, must equal the full count's. Then the part that differs between the two, the reader
stage, alone on one core: ``read_shard_rows`` with images decoded at swin_l's 384 px, captions
parsed by spaCy (a count) vs answered from the stored keys (add-concepts).

    .venv/bin/python benchmarks/add_concepts.py [--shards 20] [--method normalized] [--json f]
    .venv/bin/python benchmarks/add_concepts.py --tagged [--json f]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from freqscan.add_concepts import add_concepts
from freqscan.concepts import load_concepts
from freqscan.config import METHODS, CountConfig, RuntimeConfig, SourceConfig, TextConfig
from freqscan.runtime.pipeline import run_count
from freqscan.tables.store import DataFile, OutputStore

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from benchkit import SAMPLE, emit, sample_shards, timed  # noqa: E402
from tablekit import comparable_tables  # noqa: E402


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


def table_bytes(out: Path, table: str) -> int:
    store = OutputStore(str(out))
    version = json.loads(store.current_run()["table_versions"])[table]
    return sum(f.size for f in store.data_files(table, version))


def captions_only(shards: int, method: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sample_shards(root / "shards", shards)
        concepts = make_concepts(root)

        def config(out: str, concepts: Path) -> CountConfig:
            return CountConfig(
                source=SourceConfig(input=(str(root / "shards"),)),
                out=str(root / out),
                dataset_name="laion-sample",
                concepts=str(concepts),
                text=TextConfig(method=method),
                runtime=RuntimeConfig(),
            )

        run_count(config("warm-up", concepts["a"]))
        _, count_a = timed(lambda: run_count(config("out", concepts["a"])))
        added, add = timed(lambda: add_concepts(str(root / "out"), str(concepts["b"])))
        _, full = timed(lambda: run_count(config("full", concepts["ab"])))
        got, want = comparable_tables(str(root / "out")), comparable_tables(str(root / "full"))
        assert all(got[t] == want[t] for t in ("frequencies", "shard_counts", "shards"))
        assert len(added.already_counted) == 10
        return {
            "method": method,
            "shards": shards,
            "samples": added.samples,
            "concepts_a": len(load_concepts(str(concepts["a"]))),
            "concepts_added": len(added.added),
            "count_a_s": round(count_a, 2),
            "add_concepts_s": round(add, 2),
            "full_count_ab_s": round(full, 2),
            "add_concepts_over_full_count": round(add / full, 3),
            "tables_equal_full_count": True,
            "input_bytes": sum(p.stat().st_size for p in (root / "shards").iterdir()),
            "caption_keys_bytes": table_bytes(root / "out", "caption_keys"),
            "hits_bytes_count_a": table_bytes(root / "out", "hits"),
            "hits_bytes_full_count": table_bytes(root / "full", "hits"),
        }


def tagged() -> dict:
    import pyarrow.parquet as pq
    from imagekit import CONCEPTS, tagged_setup
    from typer.testing import CliRunner

    from freqscan.cli import app

    def invoke(*args: str) -> None:
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, result.output + repr(result.exception)

    files = sorted(SAMPLE.glob("part-*.parquet"))
    captions = [c for f in files for c in pq.read_table(f)["TEXT"].to_pylist()]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = tagged_setup(root, captions, samples=160, shards=8)
        names = list(CONCEPTS)
        for name, chosen in (("a", names[:7]), ("b", names[7:]), ("ab", names)):
            (root / f"{name}.json").write_text(json.dumps({c: CONCEPTS[c] for c in chosen}))

        def count(out: str, concepts: str) -> list[str]:
            given = str(setup["concepts"])
            args = [a if a != given else str(root / concepts) for a in setup["common"]]
            return [*args, "--out", str(root / out)]

        invoke(*count("warm-up", "a.json"))
        _, count_a = timed(lambda: invoke(*count("out", "a.json")))
        _, add = timed(lambda: invoke("add-concepts", str(root / "out"), str(root / "b.json")))
        _, full = timed(lambda: invoke(*count("full", "ab.json")))
        assert comparable_tables(str(root / "out")) == comparable_tables(str(root / "full"))
        reader = reader_stage(root / "shards", root / "ab.json")
        return {
            "tagger": "rampp tiny (random weights, CPU), 192 px",
            "shards": 8,
            "samples": 160,
            "count_a_s": round(count_a, 2),
            "add_concepts_s": round(add, 2),
            "full_count_ab_s": round(full, 2),
            "add_concepts_over_full_count": round(add / full, 3),
            "tables_equal_full_count_hits_included": True,
            **reader,
        }


def reader_stage(shards: Path, concepts: Path, repeat: int = 3) -> dict:
    """CPU seconds per sample of the reader at 384 px: parsing captions vs stored keys."""
    from freqscan.counting.shard import read_shard_rows
    from freqscan.image.input import ImageInput
    from freqscan.records import ShardInfo
    from freqscan.text.matcher import ConceptMatcher
    from freqscan.text.pipeline import load_pipeline
    from freqscan.text.searcher import TextSearcher
    from freqscan.text.stored import StoredKeysSearch

    matcher = ConceptMatcher.build(load_concepts(str(concepts)), load_pipeline(None), "normalized")
    files = sorted(shards.glob("*.tar"))
    source = SourceConfig(input=(str(shards),), format="webdataset")
    infos = [ShardInfo(str(f), f.stat().st_size) for f in files]
    image = ImageInput(384)
    keys: dict[str, pa.Table] = {}

    def parse() -> None:
        searcher = TextSearcher(TextConfig(caption_cache_size=0), matcher)
        for info in infos:

            def keep(table: pa.Table, path: str = info.path) -> DataFile:
                keys[path] = table
                return DataFile("unused", 0, 0, table.num_rows)

            for _ in read_shard_rows(info, source, searcher.search_samples, image, write_keys=keep):
                pass

    def stored() -> None:
        for info in infos:
            search = StoredKeysSearch(keys[info.path], matcher)
            for _ in read_shard_rows(info, source, search, image):
                pass

    def cpu(fn) -> float:
        best = float("inf")
        for _ in range(repeat):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
        return best

    parsed, from_keys = cpu(parse), cpu(stored)
    return {
        "reader_cpu_s_parsing_captions": round(parsed, 3),
        "reader_cpu_s_stored_keys": round(from_keys, 3),
        "reader_stored_over_parsing": round(from_keys / parsed, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--method", choices=METHODS, default="normalized")
    parser.add_argument("--tagged", action="store_true", help="Tagged run (tiny RAM++ on CPU).")
    parser.add_argument("--json", help="Also write the results here.")
    args = parser.parse_args()

    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    emit(tagged() if args.tagged else captions_only(args.shards, args.method), args.json)


if __name__ == "__main__":
    main()
