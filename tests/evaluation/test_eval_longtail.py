"""eval longtail and eval correlate on the paper's CC3M counts and on a real freqscan output."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from evalkit import assert_png, freqscan_output, paper_bundle, run_cli
from scipy import stats

from freqscan.evaluation import plots
from freqscan.evaluation.longtail import compare, let_it_wag, long_tail
from freqscan.evaluation.sources import read_concept_list


def paper_integrated_counts() -> dict[str, int]:
    """Union of the paper's integrated count files, first file (by name) wins."""
    merged: dict[str, int] = {}
    files = paper_bundle()
    for name in sorted(files):
        if name.endswith("_cc3m_integrated_tlemmatized_i0.7_search_counts.json"):
            for concept, n in files[name].items():
                merged.setdefault(concept, n)
    return merged


def test_long_tail_and_selection_on_paper_counts(tmp_path):
    counts = paper_integrated_counts()
    out = tmp_path / "lt"
    result = run_cli(
        "eval", "longtail", "-c", "paper", "--k", "50", "--min-count", "1", "--compare", "paper",
        "--out", out,
    )  # fmt: skip
    assert "Wrote to" in result.output and "Jaccard" in result.output
    data = json.loads((out / "longtail.json").read_text())
    values = np.array(list(counts.values()))
    assert data["long_tail"]["concepts"] == len(counts)
    assert data["long_tail"]["found"] == int((values > 0).sum())
    for t, share in data["long_tail"]["share_below"].items():
        assert share == pytest.approx((values < int(t)).mean())
    # The 50 rarest with at least one occurrence, rarest first, ties by name.
    want = sorted(((c, n) for c, n in counts.items() if n >= 1), key=lambda kv: (kv[1], kv[0]))
    got = [(r["concept"], r["count"]) for r in data["selection"]["concepts"]]
    assert got == want[:50]
    assert (out / "let_it_wag.txt").read_text().splitlines() == [c for c, _ in want[:50]]
    # Compared with the paper's 290 Let-it-Wag concepts.
    paper_list = read_concept_list("paper")
    assert len(paper_list) == 290 and paper_list[0] == "A300B4"
    comparison = data["comparison"]
    assert comparison["overlap"] + comparison["only_reference"] == 290
    assert comparison["overlap"] + comparison["only_selected"] == 50
    ranked = (out / "longtail.csv").read_text().splitlines()
    assert ranked[0] == "rank,concept,count,normalized" and len(ranked) == 1 + len(counts)
    assert_png(out / "longtail.png", (1280, 480))


def test_selection_rules():
    counts = {"Great_White_Shark": 3, "red fox": 0, "tabby cat": 7, "dog": 100, "ant": 3}
    sel = let_it_wag(counts, ["great white shark", "Red Fox", "ant", "unicorn"], k=2)
    assert sel.concepts == (("red fox", 0), ("Great_White_Shark", 3))
    assert sel.not_in_counts == ("unicorn",)
    sel = let_it_wag(counts, k=2, min_count=1)
    assert sel.concepts == (("Great_White_Shark", 3), ("ant", 3))
    cmp = compare(["Great_White_Shark", "ant"], ["great white shark", "newt"])
    assert cmp.overlap == ("Great_White_Shark",) and cmp.jaccard == pytest.approx(1 / 3)
    tail = long_tail(counts)
    assert tail.ranked[0] == ("dog", 100) and tail.share_below[1] == pytest.approx(0.2)
    fig = plots.longtail_figure(tail)
    left, right = fig.get_axes()
    assert left.get_yscale() == "log" and len(left.get_lines()[0].get_xdata()) == 4
    assert len(right.patches) == len(tail.thresholds)


def test_correlate_output_with_paper_counts(tmp_path_factory, ray_local):
    out = freqscan_output(tmp_path_factory.mktemp("out"))
    target = tmp_path_factory.mktemp("cor")
    result = run_cli("eval", "correlate", out, "paper", "-t", "text", "--out", target)
    assert "Spearman rho" in result.output and "using text_count instead" not in result.output
    data = json.loads((target / "correlate.json").read_text())
    with open(target / "correlate.csv", newline="") as fh:
        joined = [(r["concept"], int(r["count_a"]), int(r["count_b"])) for r in csv.DictReader(fh)]
    a = np.array([x[1] for x in joined])
    b = np.array([x[2] for x in joined])
    # Independently: the paper's lemmatized counts, by concept, first file wins.
    paper: dict[str, int] = {}
    files = paper_bundle()
    for name in sorted(files):
        if name.endswith("_cc3m_lemmatized_search_counts.json"):
            for concept, n in files[name].items():
                paper.setdefault(concept, n)
    folded: dict[str, int] = {}
    for concept, n in paper.items():
        folded.setdefault(re.sub(r"[_\s]+", " ", concept).strip().lower(), n)
    assert data["concepts_joined"] == len(joined) == len(paper)
    for concept, _, n in joined:
        assert n == paper.get(concept, folded.get(re.sub(r"[_\s]+", " ", concept).lower()))
    assert data["spearman_rho"] == pytest.approx(stats.spearmanr(a, b).statistic)
    assert data["pearson_log10_r"] == pytest.approx(
        np.corrcoef(np.log10(np.maximum(a, 1)), np.log10(np.maximum(b, 1)))[0, 1]
    )
    assert 0.2 < data["spearman_rho"] < 0.9
    fig_png = assert_png(target / "correlate.png", (640, 480))
    assert fig_png.shape == (480, 640, 3)
