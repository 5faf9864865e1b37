"""dashboards/freqscan.json: a Grafana dashboard model whose every query reads series that
freqscan or Ray really export.

A query's PromQL is parsed with ``promql-parser`` (binding of the Rust crate of that name, which
follows Prometheus' grammar) after Grafana's variables are substituted. Each series selector must
name a metric that is exported: freqscan's from ``METRICS``; Ray's as seen on the Prometheus
endpoint of a real local Ray while a real count runs; Ray's GPU gauges, which a CPU-only machine
never exports, from the node agent's own metric definitions. Its label matchers must use labels
that series carries.

There is no JSON Schema of Grafana's dashboard model to validate against: the npm package
``@grafana/schema`` ships TypeScript types only, and ``grafana-foundation-sdk``'s (PyPI)
``from_json`` decodes leniently, ignoring unknown keys and requiring none. The model's structure
is checked here as the invariants Grafana relies on.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import promql_parser
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_SHARDS
from metricskit import metrics_endpoint, samples

from freqscan.config import CountConfig, SourceConfig
from freqscan.runtime.metrics import METRICS, RAY_PREFIX

pytestmark = pytest.mark.timeout(300)

DASHBOARD = Path(__file__).parents[1] / "dashboards" / "freqscan.json"
Dashboard = dict[str, Any]
# metric name -> the label names its series carry
Exported = dict[str, set[str]]

# Ray's node agent exports these per GPU it finds (reporter_agent.METRICS_GAUGES), so a machine
# without GPUs never shows them: the test accepts them from that definition instead.
GPU_ONLY_NAMES = frozenset(
    {"ray_node_gpus_utilization", "ray_node_gram_used", "ray_node_gram_available"}
)
# Prometheus adds these to every series it scrapes.
TARGET_LABELS = frozenset({"instance", "job"})
# Grafana's own interval variables; any duration stands in for them when parsing.
INTERVAL_VARIABLES = frozenset({"__rate_interval", "__interval", "__range"})
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# $name, ${name}, ${name:format} and the deprecated [[name]]
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),)?\s*(?P<label>\w+)\s*\)", re.S)
GRID_COLUMNS = 24
# Which names Ray exports does not depend on how often workers report: reporting every 2 s (Ray:
# 10 s) shows Ray Data's gauges within 2 s of the count's dataset running, not 10.
REPORT_INTERVAL_S = 2


def load(path: Path = DASHBOARD) -> Dashboard:
    return json.loads(path.read_text())


def all_panels(dashboard: Dashboard) -> Iterator[dict[str, Any]]:
    """Every panel, with those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: Dashboard) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(where, PromQL with Grafana's variables, labels it reads besides its matchers) of every
    panel target and query variable."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"], ()
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query  # Grafana 10's object form
        where = f"variable {variable['name']!r}"
        found = LABEL_VALUES.fullmatch(query.strip())
        if found is None:
            yield where, query, ()
        elif found["selector"]:
            yield where, found["selector"], (found["label"],)


def substitute(query: str, variables: set[str]) -> str:
    """``query`` with the dashboard's variables as a plain value and Grafana's intervals as a
    duration, so that it parses as PromQL; an undefined variable raises ValueError."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name in INTERVAL_VARIABLES:
            return "5m"
        if name in variables:
            return "x"
        raise ValueError(f"undefined variable ${name}")

    return VARIABLE.sub(value, query)


def selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, visit)
    return found


def metric_name(selector: promql_parser.VectorSelector) -> str | None:
    """The metric a selector names, written as ``name{...}`` or ``{__name__="name"}``."""
    if selector.name:
        return selector.name
    return next(
        (
            m.value
            for m in selector.matchers.matchers
            if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
        ),
        None,
    )


def problems(dashboard: Dashboard, exported: Exported) -> list[str]:
    """Why each query of the dashboard may read nothing: it does not parse, or names a metric or
    matches a label that is not exported."""
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    out: list[str] = []
    for where, query, read_labels in queries(dashboard):
        try:
            expr = promql_parser.parse(substitute(query, variables))
        except ValueError as exc:
            out.append(f"{where}: {exc}: {query}")
            continue
        for selector in selectors(expr):
            name = metric_name(selector)
            if name not in exported:
                out.append(f"{where}: {name or str(selector)!r} is not an exported metric")
                continue
            labels = {m.name for m in selector.matchers.matchers} | set(read_labels)
            unknown = labels - exported[name] - TARGET_LABELS - {"__name__"}
            if unknown:
                out.append(f"{where}: {name} has no label {sorted(unknown)}")
    return out


def referenced_names(dashboard: Dashboard) -> set[str]:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    return {
        metric_name(s) or ""
        for _, query, _ in queries(dashboard)
        for s in selectors(promql_parser.parse(substitute(query, variables)))
    }


def freqscan_exported() -> Exported:
    out: Exported = {}
    for spec in METRICS:
        for name in spec.prometheus_names:
            out[name] = set(spec.tag_keys) | ({"le"} if name.endswith("_bucket") else set())
    return out


def gpu_exported() -> Exported:
    """GPU_ONLY_NAMES with their tag keys, as the installed Ray's node agent defines them."""
    from ray.dashboard.modules.reporter.reporter_agent import METRICS_GAUGES

    defined = {RAY_PREFIX + g.name: set(g.view.columns) for g in METRICS_GAUGES.values()}
    assert GPU_ONLY_NAMES <= defined.keys(), GPU_ONLY_NAMES - defined.keys()
    return {name: defined[name] for name in GPU_ONLY_NAMES}


def merged(*sources: Exported) -> Exported:
    out: Exported = defaultdict(set)
    for source in sources:
        for name, labels in source.items():
            out[name] |= labels
    return dict(out)


@dataclass
class Observed:
    """What a real Ray's endpoint showed during a count."""

    exported: Exported
    ray_data_tags: set[str]  # the ``dataset`` label values of Ray Data's series
    run_id: str


def observe(url: str, work: Future[Any], wanted: set[str]) -> Observed:
    """Every series the endpoint showed while ``work`` ran and until it shows ``wanted``, at
    most three report intervals after ``work`` is done.

    Ray Data's operator metrics are gauges of its stats actor: the agent serves them from the
    actor's first report during a dataset's execution until two report intervals after its last
    one (the agent's gauge TTL), so they may show only just after a short count returns and be
    gone a little later: one scrape at the end could miss them. Its histograms stay, like
    freqscan's counters.
    """
    seen: Exported = defaultdict(set)
    tags: set[str] = set()
    deadline = float("inf")
    while True:
        for sample in samples(url):
            seen[sample.name] |= sample.labels.keys()
            if sample.name.startswith("ray_data_") and "dataset" in sample.labels:
                tags.add(sample.labels["dataset"])
        if work.done():
            summary = work.result()  # the count's own error, if any
            deadline = min(deadline, time.monotonic() + 3 * REPORT_INTERVAL_S)
            if wanted <= seen.keys() or time.monotonic() > deadline:
                return Observed(dict(seen), tags, summary.run_id)
        time.sleep(1)


@pytest.fixture(scope="module")
def dashboard() -> Dashboard:
    return load()


@pytest.fixture(scope="module")
def observed(dashboard: Dashboard, tmp_path_factory: pytest.TempPathFactory) -> Observed:
    """Ray's series as a real Ray serves them during a real count (a shard of 200 LAION sample
    rows through Ray Data's actor pool), with freqscan's and the GPU gauges' definitions."""
    from freqscan.runtime.pipeline import run_count

    tmp = tmp_path_factory.mktemp("dash")
    pq.write_table(pq.read_table(SAMPLE_SHARDS[0]).slice(0, 200), tmp / "part-00000.parquet")
    config = CountConfig(
        source=SourceConfig(input=(str(tmp / "part-00000.parquet"),)),
        out=str(tmp / "out"),
        dataset_name="dashboards",
    )
    freqscan, gpu = freqscan_exported(), gpu_exported()
    wanted = referenced_names(dashboard) - freqscan.keys() - gpu.keys()
    with metrics_endpoint(REPORT_INTERVAL_S) as url, ThreadPoolExecutor(1) as pool:
        seen = observe(url, pool.submit(run_count, config), wanted)
    return replace(seen, exported=merged(seen.exported, freqscan, gpu))


@pytest.fixture(scope="module")
def exported(observed: Observed) -> Exported:
    return observed.exported


def test_every_query_reads_exported_series(dashboard, exported):
    assert problems(dashboard, exported) == []


def ray_data_patterns(dashboard: Dashboard, run_ids: list[str]) -> set[str]:
    """The ``dataset`` regexes of the Ray Data panels with ``run_ids`` selected in the ``run_id``
    variable (Grafana writes a multi-value selection into a regex as ``(a|b)``)."""
    selected = run_ids[0] if len(run_ids) == 1 else "(" + "|".join(run_ids) + ")"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    found = set()
    for _, query, _ in queries(dashboard):
        query = re.sub(r"\$\{run_id\}|\$run_id\b", selected, query)
        for selector in selectors(promql_parser.parse(substitute(query, variables))):
            if (metric_name(selector) or "").startswith("ray_data_"):
                found |= {m.value for m in selector.matchers.matchers if m.name == "dataset"}
    return found


def test_the_ray_data_panels_show_the_selected_run(dashboard, observed):
    assert observed.ray_data_tags, "Ray exported no Ray Data series during the count"
    patterns = ray_data_patterns(dashboard, [observed.run_id])
    assert len(patterns) == 1, patterns  # every Ray Data panel filters the same way
    for tags_match, run_ids in [
        (True, [observed.run_id]),
        (True, ["20261124T000000Z-abcdef", observed.run_id]),
        (False, ["20261124T000000Z-abcdef"]),
    ]:
        (pattern,) = ray_data_patterns(dashboard, run_ids)
        # Prometheus anchors =~ at both ends.
        assert {bool(re.fullmatch(pattern, t)) for t in observed.ray_data_tags} == {tags_match}


def mutated(dashboard: Dashboard, old: str, new: str) -> Dashboard:
    """A copy with ``old`` replaced by ``new`` in the first query that contains it."""
    changed = copy.deepcopy(dashboard)
    for panel in all_panels(changed):
        for target in panel.get("targets", []):
            if old in target["expr"]:
                target["expr"] = target["expr"].replace(old, new, 1)
                return changed
    for variable in changed["templating"]["list"]:
        if old in variable.get("query", ""):
            variable["query"] = variable["query"].replace(old, new, 1)
            return changed
    raise AssertionError(f"no query contains {old!r}")


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("ray_freqscan_samples_total", "ray_freqscan_sample_total", "not an exported metric"),
        ("ray_data_output_rows{", "ray_data_outputs_rows{", "not an exported metric"),
        ("ray_node_gram_used", "ray_node_gram_usage", "not an exported metric"),
        (
            "label_values(ray_freqscan_samples_total,",
            "label_values(freqscan_samples,",
            "'freqscan_samples' is not an exported metric",
        ),
        ('stage="tag"', 'stge="tag"', "has no label ['stge']"),
        ("$run_id", "$run", "undefined variable $run"),
        ("[$__rate_interval]))", "[$__rate_interval])", "unclosed left parenthesis"),
    ],
)
def test_a_broken_query_is_rejected(dashboard, exported, old, new, reason):
    found = problems(mutated(dashboard, old, new), exported)
    assert len(found) == 1 and reason in found[0], found


def test_the_model_is_a_grafana_dashboard(dashboard):
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] and dashboard["title"]
    assert referenced_names(dashboard)  # every query parses (names: the test above)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert len(variables) == len(dashboard["templating"]["list"])
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    for name in ("run_id", "dataset"):
        query = variables[name]["query"]
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == DATASOURCE
        assert query.startswith("label_values(ray_freqscan_") and query.endswith(f", {name})")

    panels = list(all_panels(dashboard))
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert cells.setdefault((x, y), panel["id"]) == panel["id"], "panels overlap"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE and panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
            # Grafana's $__rate_interval: at least four scrapes, whatever the scrape interval.
            ranges = re.findall(r"\[([^\]]*)\]", target["expr"])
            assert set(ranges) <= {"$__rate_interval"}, (panel["title"], ranges)
