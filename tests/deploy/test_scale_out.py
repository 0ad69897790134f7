"""deploy/kserve and deploy/keda: valid against the vendored upstream CRDs, and wired to the app.

Schema checks go through :mod:`tests.deploy.crds` (the CRDs' openAPIV3Schema, unknown fields
refused); the rest checks what a schema cannot: the runtime's port, probes and metrics path are
the app's, the ScaledObject targets the predictor KServe creates, and its Prometheus query sums
the in-flight gauge over every replica (promtool evaluates it on synthetic series).
"""

from __future__ import annotations

import copy
import math
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.deploy import crds

DEPLOY = REPO_ROOT / "deploy"
DIRS = (DEPLOY / "kserve", DEPLOY / "keda")
IN_FLIGHT = "dlqr_http_requests_in_flight"


def _objects() -> dict[str, dict]:
    out = {}
    for d in DIRS:
        for path in sorted(d.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc["kind"] != "Kustomization":
                    out[doc["kind"]] = doc
    return out


OBJECTS = _objects()


@pytest.fixture
def runtime():
    return copy.deepcopy(OBJECTS["ServingRuntime"])


@pytest.fixture
def isvc():
    return copy.deepcopy(OBJECTS["InferenceService"])


@pytest.fixture
def scaled():
    return copy.deepcopy(OBJECTS["ScaledObject"])


@pytest.fixture(scope="module")
def app():
    from serving.app import create_app

    return create_app({"ARTIFACTS_DIR": str(REPO_ROOT / "artifacts")})


# ------------------------------------------------------------------------ vendored CRDs


def test_vendored_crds_are_the_recorded_upstream_files():
    sources = crds.sources()
    assert len(sources) == 3
    for name, meta in sources.items():
        path = crds.CRDS / name
        assert crds.sha256(path) == meta["sha256"], f"{name} differs from {meta['url']}"
        assert re.fullmatch(r"v\d+\.\d+\.\d+", meta["version"]) and meta["version"] in meta["url"], name
        assert re.fullmatch(r"[0-9a-f]{40}", meta["commit"]), name
        assert "Apache License" in (path.parent / "LICENSE").read_text(), name
    kinds = {kind for _, kind in crds.definitions()}
    assert kinds == {"ServingRuntime", "InferenceService", "ScaledObject"}


def test_every_manifest_validates_against_its_crd():
    assert set(OBJECTS) == {"ServingRuntime", "InferenceService", "ScaledObject"}
    for kind, obj in OBJECTS.items():
        assert crds.errors(obj) == [], kind


def test_the_kustomizations_list_every_manifest_beside_them():
    for d in DIRS:
        listed = set(yaml.safe_load((d / "kustomization.yaml").read_text())["resources"])
        assert listed == {p.name for p in d.glob("*.yaml")} - {"kustomization.yaml"}, d


# ----------------------------------------------------- the validation can fail (negatives)


def _set(obj: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[int(last) if last.isdigit() else last] = value
    return obj


@pytest.mark.parametrize(
    ("kind", "path", "value", "fragment"),
    [
        # a misspelt field: accepted by a non-strict check, refused by kubectl --validate=strict
        ("InferenceService", "spec.predictor.model.storageURI", "s3://x", "storageURI"),
        ("InferenceService", "spec.predictor.minReplicas", "two", "'two' is not of type 'integer'"),
        ("InferenceService", "spec.predictor.model.modelFormat", {"version": "1"}, "'name' is a required"),
        ("ServingRuntime", "spec.containers.0.ports.0.containerPort", "8080", "not of type 'integer'"),
        ("ServingRuntime", "spec.containers.0.readinessProbe.httpGet.pathh", "/x", "pathh"),
        ("ServingRuntime", "spec.supportedModelFormats.0.autoSelect", "no", "not of type 'boolean'"),
        ("ScaledObject", "spec.triggers", [], "should be non-empty"),
        ("ScaledObject", "spec.triggers.0.metadata.threshold", 4, "4 is not of type 'string'"),
        ("ScaledObject", "spec.scaleTargetRef", {"kind": "Deployment"}, "'name' is a required"),
        ("ScaledObject", "spec.maxReplicas", 8, "maxReplicas"),
    ],
)
def test_an_invalid_field_is_refused(kind, path, value, fragment):
    obj = _set(copy.deepcopy(OBJECTS[kind]), path, value)
    found = crds.errors(obj)
    assert found and any(fragment in e for e in found), found


def test_an_unknown_api_version_is_refused(isvc):
    isvc["apiVersion"] = "serving.kserve.io/v1alpha9"
    with pytest.raises(LookupError, match="no version 'v1alpha9'"):
        crds.errors(isvc)


def test_strict_mode_keeps_maps_and_preserved_fields_open():
    schema = {
        "type": "object",
        "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}},
            "items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        },
    }
    s = crds.strict(schema)
    assert (
        s["additionalProperties"] is False
        and s["properties"]["items"]["items"]["additionalProperties"] is False
    )
    assert s["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in s["properties"]["free"]
    assert "additionalProperties" not in schema  # the input is not changed


# ------------------------------------------------------------- wired to the real server


def _app_routes(app) -> set[tuple[str, str]]:
    return {(rule.rule, m) for rule in app.url_map.iter_rules() for m in rule.methods}


def test_runtime_follows_kserves_conventions_and_the_apps_routes(runtime, isvc, app):
    (c,) = runtime["spec"]["containers"]
    assert c["name"] == "kserve-container"  # KServe merges the predictor's settings into this name
    env = {e["name"]: e["value"] for e in c["env"]}
    port = int(env["DLQR_BIND"].rpartition(":")[2])
    assert port == 8080 and [p["containerPort"] for p in c["ports"]] == [port]
    assert env["DLQR_ARTIFACTS_DIR"] == "/mnt/models"  # where the storage initializer puts storageUri
    routes = _app_routes(app)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["port"] == port and (get["path"], "GET") in routes, probe
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    ann = runtime["spec"]["annotations"]
    assert (
        ann["prometheus.kserve.io/port"] == str(port) and (ann["prometheus.kserve.io/path"], "GET") in routes
    )
    assert "v2" in runtime["spec"]["protocolVersions"]
    mounts = {m["name"] for m in c["volumeMounts"]}
    assert mounts == {v["name"] for v in runtime["spec"]["volumes"]}
    assert any(m["mountPath"] == env["PROMETHEUS_MULTIPROC_DIR"] for m in c["volumeMounts"])


def test_inference_service_uses_the_runtime_and_scrapes_its_port(runtime, isvc):
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    ann = isvc["metadata"]["annotations"]
    assert ann["serving.kserve.io/deploymentMode"] == "Standard"
    assert ann["serving.kserve.io/autoscalerClass"] == "external"  # KEDA scales it, no KServe HPA
    assert ann["prometheus.io/port"] == runtime["spec"]["annotations"]["prometheus.kserve.io/port"]
    assert ann["serving.kserve.io/enable-prometheus-scraping"] == "false"  # would point at 9091


def test_scaled_object_targets_the_predictor_on_the_in_flight_gauge(scaled, isvc, app):
    target = scaled["spec"]["scaleTargetRef"]
    # KServe names the predictor Deployment <InferenceService>-predictor in Standard mode.
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{isvc['metadata']['name']}-predictor",
    }
    spec = scaled["spec"]
    # The CRD's CEL rule (not evaluated by jsonschema): minReplicaCount <= maxReplicaCount.
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["minReplicaCount"] == isvc["spec"]["predictor"]["minReplicas"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert {"serverAddress", "query", "threshold"} <= set(meta)  # the prometheus scaler's required keys
    assert float(meta["threshold"]) > 0
    query = meta["query"]
    assert query.startswith("sum(") and IN_FLIGHT in query and target["name"] in query
    # The gauge exists under that name in the app's exposition.
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert re.search(rf"^{IN_FLIGHT} ", metrics, re.M), "the app exports no such gauge"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (as root: scripts/install_prometheus.sh)")
    return path


def test_the_query_sums_every_replica_and_nothing_else(promtool, tmp_path):
    """promtool evaluates the trigger query on synthetic series: three predictor pods, plus pods
    it must ignore; the result is the total, so the HPA asks ceil(total / threshold) replicas."""
    (trigger,) = OBJECTS["ScaledObject"]["spec"]["triggers"]
    query, threshold = trigger["metadata"]["query"], float(trigger["metadata"]["threshold"])
    (tmp_path / "rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "keda", "rules": [{"record": "keda_input", "expr": query}]}]})
    )
    pods = {
        "dlqr-serving-predictor-7d9f-a": 2,
        "dlqr-serving-predictor-7d9f-b": 6,
        "dlqr-serving-predictor-7d9f-c": 7,
    }
    series = [
        {"series": f'{IN_FLIGHT}{{namespace="dlqr", pod="{pod}"}}', "values": f"{n}x10"}
        for pod, n in pods.items()
    ]
    series += [  # another workload in the namespace, and the same names in another namespace
        {"series": f'{IN_FLIGHT}{{namespace="dlqr", pod="dlqr-canary-5c4b-a"}}', "values": "50x10"},
        {"series": f'{IN_FLIGHT}{{namespace="other", pod="dlqr-serving-predictor-1-a"}}', "values": "50x10"},
    ]
    total = sum(pods.values())
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": "keda_input",
                        "eval_time": "5m",
                        "exp_samples": [{"labels": "keda_input", "value": total}],
                    }
                ],  # fmt: skip
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests))
    res = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert math.ceil(total / threshold) == 4  # 15 in flight at 4 per replica: 4 replicas
