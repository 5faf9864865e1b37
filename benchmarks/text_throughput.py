"""Text search throughput, side by side in one run, on the 10,000 bundled LAION captions.

Compares, in this one process (so per core):
  * the paper's way: the full spaCy pipeline (`nlp.pipe`, all components) + the paper's key set,
  * freqscan `paper` and `normalized` (TextSearcher: components that do not change keys off),
    with the per-worker caption cache off and on,
then checks that the paper's key sets from freqscan's pipeline equal the full pipeline's, and
times the whole count job with 1 and 2 Ray workers.

    .venv/bin/python benchmarks/text_throughput.py [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import spacy

from freqscan.concepts import load_concepts
from freqscan.config import CountConfig, RuntimeConfig, SourceConfig, TextConfig
from freqscan.text.keys import paper_keys
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.pipeline import load_pipeline, resolve_pipeline
from freqscan.text.searcher import TextSearcher

SAMPLE = Path(__file__).parents[1] / "src" / "freqscan" / "data" / "laion-sample"


def captions() -> list[str]:
    files = sorted(SAMPLE.glob("part-*.parquet"))
    return [c for f in files for c in pq.read_table(f, columns=["TEXT"])["TEXT"].to_pylist()]


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def papers_way(name: str, texts: list[str], matcher: ConceptMatcher):
    nlp = spacy.load(name)  # every component on, as the paper ran it

    def run():
        keys, ids = [], []
        for doc in nlp.pipe(texts, batch_size=256):
            keys.append(paper_keys(doc))
            ids.append(matcher.match_doc(doc))
        return keys, ids

    return timed(run)


def searcher_run(method: str, cache: int, texts: list[str], matcher: ConceptMatcher):
    searcher = TextSearcher(TextConfig(method=method, caption_cache_size=cache), matcher)
    return timed(lambda: searcher.search(texts))


def job_run(workers: int, out: str) -> dict[str, float]:
    from freqscan.runtime.pipeline import run_count

    config = CountConfig(
        source=SourceConfig(input=(str(SAMPLE),), format="parquet"),
        out=out,
        dataset_name="laion-10k",
        runtime=RuntimeConfig(num_workers=workers),
    )
    summary = run_count(config)
    return {
        "run_s": summary.seconds,
        "ray_stage_s": summary.count_seconds,
        "samples_per_s_ray_stage": summary.samples_read / summary.count_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", help="Also write the results here.")
    parser.add_argument("--skip-job", action="store_true", help="Skip the Ray scaling part.")
    args = parser.parse_args()

    texts = captions()
    name = resolve_pipeline(None)
    concepts = load_concepts()
    reduced = load_pipeline(None)
    matchers = {m: ConceptMatcher.build(concepts, reduced, m) for m in ("paper", "normalized")}
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "pipeline": name,
        "captions": len(texts),
        "distinct_captions": len(set(texts)),
        "throughput": {},
    }

    (full_keys, full_ids), wall, cpu = papers_way(name, texts, matchers["paper"])
    results["throughput"]["paper's way (full pipeline)"] = {"wall_s": wall, "cpu_s": cpu}
    runs = {}
    for method in ("paper", "normalized"):
        for cache in (0, 100_000):
            label = f"freqscan {method}, cache {'on' if cache else 'off'}"
            ids, wall, cpu = searcher_run(method, cache, texts, matchers[method])
            runs[(method, cache)] = ids
            results["throughput"][label] = {"wall_s": wall, "cpu_s": cpu}

    # Not what freqscan runs: the parser and ner both off, measured because it is the obvious
    # faster setting; its key differences are why freqscan keeps the parser.
    no_parser = spacy.load(name, disable=["parser", "ner"])

    def keys_and_matches():
        docs = list(no_parser.pipe(texts, batch_size=256))
        return [paper_keys(d) for d in docs], [matchers["paper"].match_doc(d) for d in docs]

    (np_keys, _), wall, cpu = timed(keys_and_matches)
    results["throughput"]["paper keys, parser and ner off (not used)"] = {
        "wall_s": wall,
        "cpu_s": cpu,
    }
    np_differ = [i for i, (a, b) in enumerate(zip(full_keys, np_keys, strict=True)) if a != b]
    results["parser_off_identical_share"] = 1 - len(np_differ) / len(texts)
    results["parser_off_differences"] = [
        {"caption": texts[i], "full": sorted(full_keys[i]), "parser_off": sorted(np_keys[i])}
        for i in np_differ
    ]
    reduced_keys = [paper_keys(doc) for doc in reduced.pipe(texts, batch_size=256)]
    differ = [i for i, (a, b) in enumerate(zip(full_keys, reduced_keys, strict=True)) if a != b]
    results["paper_keys_identical_share"] = 1 - len(differ) / len(texts)
    results["paper_keys_differences"] = [
        {"caption": texts[i], "full": sorted(full_keys[i]), "freqscan": sorted(reduced_keys[i])}
        for i in differ
    ]
    base = results["throughput"]["paper's way (full pipeline)"]["cpu_s"]
    for row in results["throughput"].values():
        row["captions_per_s_per_core"] = len(texts) / row["cpu_s"]
        row["speedup_vs_papers_way"] = base / row["cpu_s"]
    results["paper_matches_identical"] = runs[("paper", 0)] == full_ids
    results["cache_changes_nothing"] = all(
        runs[(m, 0)] == runs[(m, 100_000)] for m in ("paper", "normalized")
    )

    if not args.skip_job:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        with tempfile.TemporaryDirectory() as tmp:
            job_run(2, f"{tmp}/warm")  # first run pays for worker start and imports
            seconds = {w: job_run(w, f"{tmp}/w{w}") for w in (1, 2)}
        ray.shutdown()
        results["job"] = seconds
        results["job_scaling_1_to_2_run"] = seconds[1]["run_s"] / seconds[2]["run_s"]
        results["job_scaling_1_to_2_ray_stage"] = (
            seconds[1]["ray_stage_s"] / seconds[2]["ray_stage_s"]
        )

    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
