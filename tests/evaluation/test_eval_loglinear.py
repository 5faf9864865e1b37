"""eval loglinear reproduces the paper's rho on the paper's own CC3M counts and accuracies.

The expected values are computed here from the paper's JSON files (as shipped with freqscan,
read with plain ``json``) with plain numpy, following the paper's notebook
(zero_shot_integrated_search_results.ipynb) and DESIGN.md step by step: pool the classes of the
18 Fig. 2 datasets (cifar10's "plane" renamed "airplane", as the notebook does), zeros -> 1,
x = ln(count), 12 edges by numpy.linspace, numpy.digitize(right=True), mean per bin, Pearson r
between ln(exp(edge)) and the bin mean over bins 1..10.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from evalkit import assert_png, freqscan_output, paper_bundle, run_cli
from scipy import stats

from freqscan.evaluation import plots
from freqscan.evaluation.binning import paper_loglinear, robust_fit
from freqscan.evaluation.loglinear import loglinear
from freqscan.evaluation.sources import (
    PAPER_FIG2_DATASETS,
    PaperFiles,
    counts_from_frequencies,
    counts_from_paper,
    load_performance,
)

MODELS = ("backboneRN50_pretrainedcc3m", "backboneViT-B-16_pretrainedcc3m")
PROMPTS = ("simple", "ensemble", "class")
COUNT_FILES = {
    "text": "lemmatized",
    "image": "rampp0.7",
    "integrated": "integrated_tlemmatized_i0.7",
}


def expected_points(model: str, prompt: str, count_type: str, datasets=PAPER_FIG2_DATASETS):
    """(dataset, count, accuracy) the way the notebook collects them."""
    files = paper_bundle()
    points = []
    for ds in datasets:
        counts_name = f"search_counts_cc3m/{ds}_cc3m_{COUNT_FILES[count_type]}_search_counts.json"
        if counts_name not in files:  # imagenet-sketch has no lemmatized file
            continue
        classwise = dict(files[f"zero_shot_cc3m/{ds}_{prompt}_results.json"][model]["classwise"])
        if ds == "cifar10":
            classwise["airplane"] = classwise.pop("plane")
        counts = files[counts_name]
        for key in sorted(counts):
            assert key in classwise, (ds, key)
            points.append((ds, counts[key], classwise[key]))
    return points


def expected_rho(counts, accuracies) -> float | None:
    counts_positive = [c if c > 0 else 1 for c in counts]
    x = np.log(counts_positive)
    bins = np.linspace(min(x), max(x), num=12)
    assigned = np.digitize(x, bins, right=True)
    means = {}
    for k in set(assigned.tolist()):
        means[k] = np.mean([a for a, b in zip(accuracies, assigned, strict=True) if b == k])
    used = [k for k in range(1, 11) if k in means]
    if len(used) < 3:
        return None
    xs = np.log(np.exp(bins))[used]
    ys = np.array([means[k] for k in used])
    if np.ptp(ys) == 0:
        return None
    return float(np.corrcoef(xs, ys)[0, 1])


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """eval loglinear on the paper's files: 2 models x 3 prompts x 3 count types."""
    out = tmp_path_factory.mktemp("ll")
    result = run_cli(
        "eval", "loglinear", "--counts", "paper", "--performance", "paper",
        "-t", "integrated", "-t", "text", "-t", "image", "--out", out,
    )  # fmt: skip
    return out, result.output, json.loads((out / "loglinear.json").read_text())


def test_paper_rho_pooled_reproduced_for_every_model_prompt_and_count_type(paper_run):
    _, _, data = paper_run
    got = {(s["model"], s["prompt"], s["count_type"]): s for s in data["series"]}
    assert len(got) == len(MODELS) * len(PROMPTS) * len(COUNT_FILES) == 18
    assert data["inputs"]["datasets"] == list(PAPER_FIG2_DATASETS)
    for model in MODELS:
        for prompt in PROMPTS:
            for count_type in COUNT_FILES:
                points = expected_points(model, prompt, count_type)
                want = expected_rho([c for _, c, _ in points], [a for _, _, a in points])
                binned = got[(model, prompt, count_type)]["pooled"]["binned"]
                assert binned["n_points"] == len(points)
                assert binned["used_bins"] == list(range(1, 11))
                assert round(binned["rho"], 2) == round(want, 2)
                assert binned["rho"] == pytest.approx(want, abs=1e-9)
                # The paper reports rho around 0.9-0.98 for every model.
                assert 0.85 < binned["rho"] < 0.99


def test_paper_rho_per_dataset_reproduced(paper_run):
    _, _, data = paper_run
    compared = 0
    for s in data["series"]:
        for ds, fits in s["per_dataset"].items():
            points = expected_points(s["model"], s["prompt"], s["count_type"], (ds,))
            want = expected_rho([c for _, c, _ in points], [a for _, _, a in points])
            if want is None:
                assert fits["binned"]["rho"] is None
            else:
                assert fits["binned"]["rho"] == pytest.approx(want, abs=1e-9), (s["label"], ds)
                compared += 1
    assert compared > 250  # 18 series x 17-18 datasets, a few too small for 3 bins


def test_cli_writes_table_json_points_and_plot(paper_run):
    out, output, data = paper_run
    assert "Wrote to" in output and "loglinear.png" in output
    assert "no lemmatized counts for imagenet-sketch" in output
    for s in data["series"]:
        assert len(s["pooled"]["binned"]["ln_edges"]) == 12
        robust = s["pooled"]["robust"]
        assert robust["ci_low"] < robust["slope_per_decade"] < robust["ci_high"]
    rows = (out / "loglinear.csv").read_text().splitlines()
    assert rows[0].startswith("model,prompt,count_type,count_column,scope,n_points,rho")
    assert sum(1 for r in rows if ",pooled," in r) == 18
    points = (out / "loglinear_points.csv").read_text().splitlines()
    assert len(points) == 1 + 12 * 4469 + 6 * 3469
    # 9 panels (3 prompts x 3 count types) of 640 x 480 px.
    assert_png(out / "loglinear.png", (1920, 1440))


def test_core_matches_cli_and_plot_has_one_line_per_model(paper_run):
    _, _, data = paper_run
    files = PaperFiles.bundled()
    counts = [counts_from_paper(files, t, "cc3m") for t in ("integrated", "image")]
    perfs = load_performance("paper", prompts=["simple"])
    result = loglinear(counts, perfs, datasets=list(PAPER_FIG2_DATASETS), per_dataset=False)
    cli = {(s["model"], s["prompt"], s["count_type"]): s for s in data["series"]}
    for s in result.series:
        assert s.binned.rho == cli[(s.model, s.prompt, s.count_type)]["pooled"]["binned"]["rho"]
    fig = plots.loglinear_figure(result)
    axes = fig.get_axes()
    assert len(axes) == 2
    for ax in axes:
        assert ax.get_xscale() == "log"
        lines = ax.get_lines()
        assert len(lines) == 2
        for line in lines:
            assert len(line.get_xdata()) == 10
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert [lab.split(",")[0] for lab in labels] == ["RN50", "ViT-B-16"]
        assert all("$\\rho$=0.9" in lab for lab in labels)


def test_binning_edge_cases():
    # One bin empty in 1..10 is skipped, not averaged as 0.
    fit = paper_loglinear([0, 1, 10, 100, 1000, 5, 7, 9, 20, 30, 400, 40, 50], list(range(13)))
    assert None in fit.bin_means[1:11]
    assert all(fit.bin_counts[k] > 0 for k in fit.used_bins)
    assert sum(fit.bin_counts) == 13
    # All counts equal: no spread, no rho.
    assert paper_loglinear([5, 5, 5], [1.0, 2.0, 3.0]).rho is None
    assert paper_loglinear([], []).rho is None
    with pytest.raises(ValueError):
        paper_loglinear([1, 2], [1.0])


def test_robust_fit_matches_scipy_theil_sen_and_spearman():
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 5000, 300)
    counts[:40] = 0
    metric = np.round(np.log10(np.maximum(counts, 1)) * 9 + rng.normal(0, 8, 300), 1)
    fit = robust_fit(counts, metric)
    x = np.log10(np.maximum(counts, 1))
    ts = stats.theilslopes(metric, x, alpha=0.95)
    assert fit.slope_per_decade == pytest.approx(ts.slope)
    assert (fit.ci_low, fit.ci_high) == pytest.approx((ts.low_slope, ts.high_slope))
    assert fit.intercept == pytest.approx(ts.intercept)
    sp = stats.spearmanr(counts, metric)
    assert fit.spearman_rho == pytest.approx(sp.statistic)
    assert not fit.sampled
    # Above the pair limit, a sample of pairs estimates the same slope.
    sampled = robust_fit(counts, metric, max_pairs=20_000)
    assert sampled.sampled
    assert sampled.slope_per_decade == pytest.approx(ts.slope, abs=1.0)
    assert sampled.ci_low < ts.slope < sampled.ci_high


def test_text_only_output_falls_back_to_text_counts(tmp_path_factory, ray_local):
    out = freqscan_output(tmp_path_factory.mktemp("out"))
    # A per-class CSV as a user would have it: concept,metric.
    csv_path = tmp_path_factory.mktemp("perf") / "perf.csv"
    rows = ["concept,metric,model,dataset"]
    for i, concept in enumerate(["dog", "cat", "car", "shirt", "woman", "tree", "house", "bird"]):
        rows.append(f"{concept},{10 * i % 70},toy,mini")
    rows.append("no_such_concept_anywhere,50,toy,mini")
    csv_path.write_text("\n".join(rows) + "\n")
    target = tmp_path_factory.mktemp("ll-out")
    result = run_cli(
        "eval", "loglinear", "-c", out, "-p", csv_path, "-t", "integrated", "--out", target
    )
    assert "using text_count instead" in result.output
    assert "1 classes without a count" in result.output
    data = json.loads((target / "loglinear.json").read_text())
    series = data["series"][0]
    assert series["count_column"] == "text_count"
    assert series["pooled"]["binned"]["n_points"] == 8
    assert any("text-only run" in n for n in data["notes"])


def test_count_column_choice_with_and_without_image_counts():
    rows = [
        {"concept": "a", "text_count": 3, "image_count": 5, "integrated_count": 2},
        {"concept": "b", "text_count": 0, "image_count": 1, "integrated_count": 0},
    ]
    counts, column, notes = counts_from_frequencies(rows, "integrated", "x")
    assert (counts, column, notes) == ({"a": 2, "b": 0}, "integrated_count", ())
    counts, column, _ = counts_from_frequencies(rows, "image", "x")
    assert (counts, column) == ({"a": 5, "b": 1}, "image_count")
    null = [dict(r, image_count=None, integrated_count=None) for r in rows]
    counts, column, notes = counts_from_frequencies(null, "integrated", "x")
    assert column == "text_count" and counts == {"a": 3, "b": 0}
    assert "only NULL integrated_count" in notes[0]
    absent = [{"concept": r["concept"], "text_count": r["text_count"]} for r in rows]
    _, column, notes = counts_from_frequencies(absent, "image", "x")
    assert column == "text_count" and "has no image_count" in notes[0]


def test_user_errors_exit_2_with_one_line(tmp_path):
    result = run_cli("eval", "loglinear", "-c", tmp_path / "nope", "-p", "paper", code=2)
    assert result.output.count("\n") == 1 and "error:" in result.output
    result = run_cli("eval", "loglinear", "-c", "paper", "-p", "paper", "-m", "RN999", code=2)
    assert "nothing left for models" in result.output
    result = run_cli("eval", "loglinear", "-c", "paper", "-p", "paper", "-t", "rampp0.1", code=2)
    assert "available methods" in result.output
