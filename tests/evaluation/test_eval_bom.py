"""Every file the evaluation jobs read from a user loads the same with a UTF-8 byte-order mark
(Windows editors write one) as without: it never joins a column name, a class or a concept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shardkit import PLACEHOLDER_JPG, write_webdataset_shard

from freqscan.evaluation.sources import (
    Performance,
    load_counts,
    load_performance,
    read_concept_list,
)
from freqscan.evaluation.zeroshot import (
    PromptResult,
    ZeroShotResult,
    read_classnames,
    templates_for,
    webdataset,
    write_outputs,
)

BOM = "\ufeff"


def with_bom(path: Path, text: str) -> str:
    path.write_bytes((BOM + text).encode("utf-8"))
    return str(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("counts.csv", "concept,text_count\ndog,3\ncat,0\n"),
        ("counts.json", '{"dog": 3, "cat": 0}'),
    ],
)
def test_counts_files(tmp_path, name, text):
    counts = load_counts(with_bom(tmp_path / name, text), "text")
    assert counts.counts == {"dog": 3, "cat": 0}


def test_performance_csv_and_results_json(tmp_path):
    path = with_bom(tmp_path / "perf.csv", "concept,metric,dataset\ndog,55.5,pets\n")
    assert load_performance(path) == [
        Performance(model="perf", dataset="pets", prompt=None, values={"dog": 55.5}, source=path)
    ]
    results = json.dumps({"RN50": {"full": 55.5, "classwise": {"dog": 55.5}}})
    (tmp_path / "results").mkdir()
    one = with_bom(tmp_path / "results" / "pets_simple_results.json", results)
    expected = Performance("RN50", "pets", "simple", {"dog": 55.5}, one)
    assert load_performance(one) == [expected]
    # A directory of them goes through the paper files' reader.
    (found,) = load_performance(str(tmp_path / "results"))
    assert (found.model, found.dataset, found.prompt, found.values) == (
        "RN50",
        "pets",
        "simple",
        {"dog": 55.5},
    )


@pytest.mark.parametrize(
    ("name", "text"),
    [("list.txt", '"golden retriever"\ncat\n'), ("list.csv", "concept\ngolden retriever\ncat\n")],
)
def test_concept_lists(tmp_path, name, text):
    assert read_concept_list(with_bom(tmp_path / name, text)) == ["golden retriever", "cat"]


def test_class_names_templates_and_webdataset_classes(tmp_path):
    assert read_classnames(with_bom(tmp_path / "classes.txt", "cat\ndog\n")) == ["cat", "dog"]
    assert read_classnames(with_bom(tmp_path / "classes.json", '["cat", "dog"]')) == ["cat", "dog"]
    (template,) = templates_for(with_bom(tmp_path / "t.txt", "a photo of a {c}.\n"))
    assert template("dog") == "a photo of a dog."
    tar = str(tmp_path / "set.tar")
    write_webdataset_shard(
        tar,
        [
            {"key": "a", "jpg": PLACEHOLDER_JPG, "cls": BOM + "1"},
            {"key": "b", "jpg": PLACEHOLDER_JPG, "cls": "0"},
        ],
    )
    found = webdataset([tar], ["cat", "dog"])
    assert [(s.key, s.label) for s in found.samples] == [("set.tar/a", 1), ("set.tar/b", 0)]


def test_zeroshot_keeps_the_other_models_of_an_existing_results_file(tmp_path):
    with_bom(
        tmp_path / "pets_simple_results.json",
        json.dumps({"paperRN50": {"full": 50.0, "classwise": {"cat": 50.0}}}),
    )
    result = ZeroShotResult(
        model_key="mine",
        model_name="RN50",
        pretrained=None,
        device="cpu",
        dataset="pets",
        classnames=("cat",),
        keys=("a",),
        labels=(0,),
        prompts=(PromptResult("simple", 1, (0,), {"cat": (1, 1)}),),
        skipped={},
        seconds=0.0,
    )
    write_outputs(result, tmp_path)
    assert json.loads((tmp_path / "pets_simple_results.json").read_text("utf-8")) == {
        "paperRN50": {"full": 50.0, "classwise": {"cat": 50.0}},
        "mine": {"full": 100.0, "classwise": {"cat": 100.0}},
    }
