"""The Ray adapter without Ray: one spaCy load per actor, idempotent hit files, exact rows."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from shardkit import write_caption_parquet

import freqscan.text.searcher as searcher_module
from freqscan.concepts import Concept, ConceptSet
from freqscan.config import SourceConfig, TextConfig
from freqscan.records import ShardInfo
from freqscan.runtime.worker import SHARD_TASK, ShardCountWorker, hits_filename
from freqscan.text.matcher import ConceptMatcher
from freqscan.text.pipeline import load_pipeline


def test_worker_loads_spacy_once_and_writes_one_file_per_shard(tmp_path, monkeypatch):
    loads = []
    real_load = searcher_module.load_pipeline
    monkeypatch.setattr(
        searcher_module, "load_pipeline", lambda name: loads.append(name) or real_load(name)
    )

    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.parquet"
        write_caption_parquet(path, [f"a dog and {i} cats", "nothing here"])
        paths.append(str(path))
    concepts = ConceptSet((Concept("dog"), Concept("cat")), "test")
    text = TextConfig(method="paper")
    matcher = ConceptMatcher.build(concepts, load_pipeline(None), "paper")
    worker = ShardCountWorker(
        SourceConfig(input=tuple(paths)), text, matcher, str(tmp_path / "out"), "r1"
    )

    def task(path):
        return pa.Table.from_pylist(
            [{"path": path, "size": 1, "mtime": None, "etag": None}], schema=SHARD_TASK
        )

    rows = [worker(task(p)).to_pylist()[0] for p in paths] + [worker(task(paths[0])).to_pylist()[0]]
    assert loads == [None]  # spaCy loaded in __init__ only, not per batch
    dog, cat = concepts.concepts[0].id, concepts.concepts[1].id
    assert [dict(zip(r["concept_ids"], r["concept_counts"], strict=True)) for r in rows] == [
        {dog: 1, cat: 1}
    ] * 4
    assert [(r["samples_read"], r["samples_counted"], r["hits_rows"]) for r in rows] == [
        (2, 2, 1)
    ] * 4
    # The shard counted twice (a retry) rewrote its own file instead of adding one.
    files = sorted(p.name for p in (tmp_path / "out" / "hits").iterdir())
    assert files == sorted(hits_filename("r1", ShardInfo(p, 1)) for p in paths)
    hits = pq.read_table(tmp_path / "out" / "hits" / files[0]).to_pylist()
    assert len(hits) == 1 and hits[0]["run_id"] == "r1" and hits[0]["key"] == "0"
