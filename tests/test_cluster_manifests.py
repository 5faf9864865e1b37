"""The manifests in cluster/, validated against real schemas, and the freqscan rules they keep.

Schemas: Kubernetes built-ins from the ``kubernetes-validate`` package (its strict JSON schemas,
which reject unknown fields as ``kubectl``'s server-side strict field validation does); KubeRay's
RayJob CRD schema vendored in tests/data/schemas (its header gives source and changes), with
unknown fields rejected the same way; the Ray cluster launcher's ``ray-schema.json`` from the
installed ``ray`` wheel, plus Ray's own config filling and validation.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import shlex
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY_SCHEMA = ROOT / "tests" / "data" / "schemas" / "kuberay-rayjob-v1.schema.yaml"
K8S_VERSION = "1.33.0"  # a version EKS, GKE and AKS all support
K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s"
# The per-dataset job configs (jobs/<name>.yaml) that RayJobs may reference.
DATASETS = ("cc3m", "cc12m", "yfcc15m", "laion400m", "laion2b-en")
METRICS_PORT = 8080
GPU = "nvidia.com/gpu"

Doc = dict[str, Any]


# --- schemas ---------------------------------------------------------------------------------


def k8s_schema_dir() -> Path:
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    return Path(str(base / f"v{K8S_VERSION}-local-strict"))


@functools.cache
def k8s_registry() -> Registry:
    defs = json.loads((k8s_schema_dir() / "_definitions.json").read_text())
    return Registry().with_resource(defs["$id"], Resource.from_contents(defs))


def k8s_schema(kind: str, api_version: str) -> dict[str, Any]:
    """kubernetes-validate's file for a kind: `cronjob-batch-v1.json`, `role-rbac-v1.json`."""
    group, _, version = api_version.rpartition("/")
    group_version = f"{group.split('.')[0]}-{version}" if group else version
    return json.loads((k8s_schema_dir() / f"{kind.lower()}-{group_version}.json").read_text())


def closed(schema: Any) -> Any:
    """The schema with unknown fields rejected wherever it lists its fields, as the API server's
    strict field validation does for a custom resource."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@functools.cache
def kuberay_schemas() -> dict[str, dict[str, Any]]:
    rayjob = closed(yaml.safe_load(KUBERAY_SCHEMA.read_text()))
    # The API server checks a custom resource's metadata as ObjectMeta.
    rayjob["properties"]["metadata"] = {
        "$ref": f"{K8S_DEFS}.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    raycluster = {
        "type": "object",
        "properties": {
            **{key: rayjob["properties"][key] for key in ("apiVersion", "kind", "metadata")},
            "spec": rayjob["properties"]["spec"]["properties"]["rayClusterSpec"],
        },
        "additionalProperties": False,
    }
    return {"RayJob": rayjob, "RayCluster": raycluster}


def schema_for(doc: Doc) -> dict[str, Any]:
    if doc.get("apiVersion") == "ray.io/v1":
        return kuberay_schemas()[doc["kind"]]
    return k8s_schema(doc["kind"], doc["apiVersion"])


def schema_errors(doc: Doc) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema_for(doc), registry=k8s_registry())
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(doc)]


@functools.cache
def ray_launcher_schema() -> dict[str, Any]:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def launcher_errors(config: Doc) -> list[str]:
    schema = ray_launcher_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(config)]


# --- manifests -------------------------------------------------------------------------------


def load_docs(name: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all((CLUSTER / name).read_text()) if doc]


def kubernetes_files() -> list[str]:
    return sorted(path.name for path in CLUSTER.glob("*.yaml") if path.name != "aws.yaml")


def embedded_rayjob() -> Doc:
    """The RayJob the recount CronJob creates, held in its ConfigMap."""
    (configmap,) = [d for d in load_docs("recount-cronjob.yaml") if d["kind"] == "ConfigMap"]
    return yaml.safe_load(configmap["data"]["rayjob.yaml"])


def all_docs() -> Iterator[tuple[str, Doc]]:
    for name in kubernetes_files():
        for i, doc in enumerate(load_docs(name)):
            yield f"{name}#{i}:{doc['kind']}", doc
    yield "recount-cronjob.yaml:ConfigMap/rayjob.yaml", embedded_rayjob()


def one(name: str, kind: str) -> Doc:
    (doc,) = [d for d in load_docs(name) if d["kind"] == kind]
    return doc


def cluster_specs() -> dict[str, Doc]:
    return {
        "raycluster": one("raycluster.yaml", "RayCluster")["spec"],
        "rayjob-count": one("rayjob-count.yaml", "RayJob")["spec"]["rayClusterSpec"],
        "recount": embedded_rayjob()["spec"]["rayClusterSpec"],
    }


def group(spec: Doc, name: str) -> Doc:
    (found,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == name]
    return found


def containers(spec: Doc) -> list[Doc]:
    templates = [spec["headGroupSpec"]["template"]]
    templates += [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"]]


# --- schema validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "label,doc", list(all_docs()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_manifest_matches_its_schema(label: str, doc: Doc) -> None:
    assert schema_errors(doc) == []


def test_every_expected_kind_is_there() -> None:
    kinds = sorted(doc["kind"] for _, doc in all_docs())
    assert kinds == sorted(
        ["ConfigMap", "CronJob", "RayCluster", "RayJob", "RayJob", "Role", "RoleBinding"]
        + ["ServiceAccount", "ServiceAccount"]
    )


def test_aws_launcher_config_matches_rays_schema_and_checks() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    assert launcher_errors(config) == []
    # Fills Ray's AWS defaults (offline) and runs the checks `ray up` runs before any AWS call.
    validate_config(prepare_config(config))


@pytest.mark.parametrize(
    "path,value",
    [
        (("spec", "workerGroupSpecs", 0, "minReplica"), 0),  # misspelt KubeRay field
        (("spec", "workerGroupSpecs", 1, "maxReplicas"), "16"),  # wrong type
        (("spec", "enableInTreeAutoscaling"), "true"),
        (("spec", "headGroupSpec", "template", "spec", "containers", 0, "resource"), {}),
        (("spec", "headGroupSpec", "template", "spec", "nodeSelecter"), {}),
        (("metadata", "labelz"), {}),
    ],
)
def test_schema_rejects_a_broken_raycluster(path: tuple[str | int, ...], value: Any) -> None:
    doc = copy.deepcopy(one("raycluster.yaml", "RayCluster"))
    set_path(doc, path, value)
    assert schema_errors(doc)


@pytest.mark.parametrize(
    "path,value",
    [
        (("spec", "shutdownAfterJobsFinish"), True),
        (("spec", "backoffLimit"), "2"),
        (("spec", "deletionStrategy"), {"onSuccess": {"policy": "DeleteEverything"}}),
    ],
)
def test_schema_rejects_a_broken_rayjob(path: tuple[str | int, ...], value: Any) -> None:
    doc = copy.deepcopy(one("rayjob-count.yaml", "RayJob"))
    set_path(doc, path, value)
    assert schema_errors(doc)


@pytest.mark.parametrize(
    "kind,path,value",
    [
        ("CronJob", ("spec", "concurrencypolicy"), "Forbid"),
        ("CronJob", ("spec", "schedule"), 3),
        ("CronJob", ("spec", "jobTemplate", "spec", "template", "spec", "restartPolicy"), []),
        ("Role", ("rules", 0, "verb"), ["get"]),
        ("RoleBinding", ("roleRef", "kind"), 1),
        ("ConfigMap", ("data", "rayjob.yaml"), {"not": "a string"}),
        ("ServiceAccount", ("automountToken",), False),
    ],
)
def test_schema_rejects_broken_kubernetes_objects(
    kind: str, path: tuple[str | int, ...], value: Any
) -> None:
    doc = copy.deepcopy(one("recount-cronjob.yaml", kind))
    set_path(doc, path, value)
    assert schema_errors(doc)


@pytest.mark.parametrize(
    "path,value",
    [
        (("max_worker",), 80),
        (("idle_timeout_minutes",), "5"),
        (("available_node_types", "ray.worker.gpu", "min_workers"), "0"),
        (("docker", "imag"), "freqscan"),  # the schema leaves provider and node types open
        (("available_node_types", "ray.worker.gpu", "resources", "GPU"), "1"),
    ],
)
def test_ray_schema_rejects_a_broken_launcher_config(
    path: tuple[str | int, ...], value: Any
) -> None:
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    set_path(config, path, value)
    assert launcher_errors(config)


def set_path(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


# --- freqscan's rules ------------------------------------------------------------------------


def cluster_problems(spec: Doc) -> list[str]:
    """What a freqscan Ray cluster spec must have beyond its schema; empty when all is well."""
    problems = []
    head = spec["headGroupSpec"]
    if head["rayStartParams"].get("num-cpus") != "0":
        problems.append("work can be scheduled on the head (num-cpus is not 0)")
    if not spec.get("enableInTreeAutoscaling"):
        problems.append("in-tree autoscaling is off")
    for params in [head["rayStartParams"]] + [
        g["rayStartParams"] for g in spec["workerGroupSpecs"]
    ]:
        if params.get("metrics-export-port") != str(METRICS_PORT):
            problems.append(f"metrics-export-port is not {METRICS_PORT}")
    for c in containers(spec):
        if METRICS_PORT not in [p["containerPort"] for p in c.get("ports", [])]:
            problems.append(f"container {c['name']} does not expose {METRICS_PORT}")
    for g in spec["workerGroupSpecs"]:
        if not g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"]:
            problems.append(f"group {g['groupName']}: replicas outside [min, max]")
    gpu = group(spec, "gpu")["template"]["spec"]
    if not all(int(c["resources"]["limits"].get(GPU, 0)) >= 1 for c in gpu["containers"]):
        problems.append(f"gpu group has no {GPU} limit")
    if not gpu.get("nodeSelector") or not gpu.get("tolerations"):
        problems.append("gpu group is not pinned to GPU nodes (nodeSelector, tolerations)")
    cpu = group(spec, "cpu")["template"]["spec"]
    if any(GPU in c["resources"].get("limits", {}) for c in cpu["containers"]):
        problems.append("cpu group asks for GPUs")
    return problems


@pytest.mark.parametrize("name", ["raycluster", "rayjob-count", "recount"])
def test_cluster_keeps_freqscans_rules(name: str) -> None:
    assert cluster_problems(cluster_specs()[name]) == []


def test_a_gpu_group_without_a_gpu_limit_is_rejected() -> None:
    spec = copy.deepcopy(cluster_specs()["raycluster"])
    for c in group(spec, "gpu")["template"]["spec"]["containers"]:
        for amounts in c["resources"].values():
            amounts.pop(GPU)
    assert cluster_problems(spec) == [f"gpu group has no {GPU} limit"]


def test_work_on_the_head_is_rejected() -> None:
    spec = copy.deepcopy(cluster_specs()["raycluster"])
    del spec["headGroupSpec"]["rayStartParams"]["num-cpus"]
    assert cluster_problems(spec) == ["work can be scheduled on the head (num-cpus is not 0)"]


def without_sizes(spec: Doc) -> Doc:
    spec = copy.deepcopy(spec)
    for g in spec["workerGroupSpecs"]:
        for key in ("replicas", "minReplicas", "maxReplicas"):
            g.pop(key)
    return spec


def test_the_three_clusters_differ_only_in_size() -> None:
    specs = {name: without_sizes(spec) for name, spec in cluster_specs().items()}
    assert specs["rayjob-count"] == specs["raycluster"]
    assert specs["recount"] == specs["raycluster"]


def test_cluster_runs_the_installed_ray_and_the_dockerfiles_base() -> None:
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    base = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM "))
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    for spec in cluster_specs().values():
        assert spec["rayVersion"] == ray.__version__
    images = {c["image"] for spec in cluster_specs().values() for c in containers(spec)}
    launcher = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    assert images == {launcher["docker"]["image"]}


def test_pods_use_service_accounts_defined_here() -> None:
    accounts = {d["metadata"]["name"] for _, d in all_docs() if d["kind"] == "ServiceAccount"}
    used = {
        t["spec"]["serviceAccountName"]
        for spec in cluster_specs().values()
        for t in [spec["headGroupSpec"]["template"]]
        + [g["template"] for g in spec["workerGroupSpecs"]]
    }
    cron = one("recount-cronjob.yaml", "CronJob")["spec"]["jobTemplate"]["spec"]["template"]
    used.add(cron["spec"]["serviceAccountName"])
    assert used <= accounts


def test_rayjobs_are_restartable_and_clean_up() -> None:
    for job in (one("rayjob-count.yaml", "RayJob"), embedded_rayjob()):
        spec = job["spec"]
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["ttlSecondsAfterFinished"] > 0
        assert spec["submissionMode"] == "K8sJobMode"
        assert "clusterSelector" not in spec  # each brings its own cluster (rayjob-count.yaml)


def test_recount_cronjob_never_overlaps_and_may_create_its_rayjob() -> None:
    cron = one("recount-cronjob.yaml", "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    configmap = one("recount-cronjob.yaml", "ConfigMap")
    assert [v["configMap"]["name"] for v in pod["volumes"]] == [configmap["metadata"]["name"]]
    mount = pod["containers"][0]["volumeMounts"][0]["mountPath"]
    script = pod["containers"][0]["args"][0]
    assert f"kubectl create -f {mount}/rayjob.yaml" in script

    role = one("recount-cronjob.yaml", "Role")
    rayjob_verbs = {
        verb for rule in role["rules"] if "rayjobs" in rule["resources"] for verb in rule["verbs"]
    }
    assert {"create", "get"} <= rayjob_verbs
    binding = one("recount-cronjob.yaml", "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == [pod["serviceAccountName"]]


# --- entry points ----------------------------------------------------------------------------


def count_options() -> set[str]:
    import typer.main

    from freqscan.cli import app

    count = typer.main.get_command(app).commands["count"]  # type: ignore[attr-defined]
    return {opt for param in count.params for opt in param.opts}


def flags(argv: list[str]) -> dict[str, str | None]:
    """`--name value` / `--name=value` / bare `--flag` pairs of a command line."""
    out: dict[str, str | None] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            name, _, value = arg.partition("=")
            following = argv[i + 1] if i + 1 < len(argv) else None
            takes_next = not value and following is not None and not following.startswith("-")
            out[name] = value or (following if takes_next else None)
    return out


def count_entrypoints() -> list[list[str]]:
    entrypoint = one("rayjob-count.yaml", "RayJob")["spec"]["entrypoint"]
    launcher = (CLUSTER / "aws.yaml").read_text()
    commented = [line for line in launcher.splitlines() if "python -m freqscan count" in line]
    from_comments = [
        shlex.split("python" + line.split("python", 1)[1].split("#")[0]) for line in commented
    ]
    return [shlex.split(entrypoint)] + from_comments


def test_count_entrypoint_uses_options_that_exist() -> None:
    known = count_options()
    for argv in count_entrypoints():
        assert argv[:4] == ["python", "-m", "freqscan", "count"]
        assert set(flags(argv[4:])) <= known


def test_count_entrypoint_names_a_dataset_config() -> None:
    for argv in count_entrypoints():
        config = Path(flags(argv[4:])["--config"] or "")
        assert config.parent == Path("jobs") and config.suffix == ".yaml"
        assert config.stem in DATASETS


def test_dataset_configs_the_manifests_name_exist() -> None:
    present = [name for name in DATASETS if (ROOT / "jobs" / f"{name}.yaml").exists()]
    if not present:
        pytest.skip("jobs/<dataset>.yaml configs are not in this tree yet")
    for argv in count_entrypoints():
        assert (ROOT / (flags(argv[4:])["--config"] or "")).is_file()


def test_recount_entrypoint_matches_jobs_recount() -> None:
    argv = shlex.split(embedded_rayjob()["spec"]["entrypoint"])
    assert argv[:2] == ["python", "jobs/recount.py"]
    script = ROOT / argv[1]
    tree = ast.parse(script.read_text())
    arguments = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) == "add_argument"
        and isinstance(node.args[0], ast.Constant)
    ]
    positional = [a for a in arguments if not a.startswith("-")]
    given = [a for a in argv[2:] if not a.startswith("-")]
    assert len(given) == len(positional) == 1 and given[0].startswith("s3://")
    assert set(flags(argv[2:])) <= {a for a in arguments if a.startswith("-")}


def test_launcher_nodes_export_metrics_and_keep_work_off_the_head() -> None:
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert f"--metrics-export-port={METRICS_PORT}" in " ".join(config[key])
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"]["CPU"] == 0
    assert nodes["ray.worker.gpu"]["resources"]["GPU"] >= 1
