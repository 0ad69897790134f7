"""deploy/k8s: valid Kubernetes objects, wired to the app's real endpoints and the image."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.deploy import dockerfile as D

K8S = REPO_ROOT / "deploy" / "k8s"
#: Oldest Kubernetes release these manifests target (autoscaling/v2, policy/v1,
#: seccompProfile), and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", "latest")


def _docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_objects() -> dict[tuple[str, str], dict]:
    objs = {}
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in _docs(path):
            objs[(doc["kind"], doc.get("metadata", {}).get("name", path.name))] = doc
    return objs


OBJECTS = _all_objects()


def _obj(kind: str) -> dict:
    (found,) = [o for (k, _), o in OBJECTS.items() if k == kind]
    return found


@pytest.fixture(scope="module")
def deployment():
    return _obj("Deployment")


@pytest.fixture(scope="module")
def container(deployment):
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def _env(container) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def _mem(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", q)
    return int(m.group(1)) * units.get(m.group(2), 1)


def _cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory):
    """Every URL rule of the real Flask app (built without loading any model)."""
    from serving.app import create_app

    app = create_app({"ARTIFACTS_DIR": str(tmp_path_factory.mktemp("no-bundles")), "MODEL_LOADING": "none"})
    return {(rule.rule, method) for rule in app.url_map.iter_rules() for method in rule.methods}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate_against_the_kubernetes_schemas(version):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    if version == "latest":
        version = kv.latest_version()
    core = [
        o for o in OBJECTS.values() if not o["apiVersion"].startswith(("monitoring.coreos.com", "kustomize"))
    ]
    assert {o["kind"] for o in core} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
    }
    for obj in core:
        kv.validate(obj, version, strict=True)  # raises ValidationError with the offending field


def test_kustomization_lists_every_manifest_beside_it():
    for kfile in K8S.rglob("kustomization.yaml"):
        listed = set(yaml.safe_load(kfile.read_text())["resources"])
        present = {p.name for p in kfile.parent.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present, kfile


def test_probes_point_at_real_endpoints(container, app_routes):
    probes = {name: container[name] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    for name, probe in probes.items():
        assert (probe["httpGet"]["path"], "GET") in app_routes, (
            f"{name} -> {probe['httpGet']['path']} is not a route"
        )
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Loading TensorFlow + three models must fit in the startup budget.
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_ports_match_the_gunicorn_bind(container, deployment):
    bind = _env(container)["DLQR_BIND"]
    assert bind.startswith("0.0.0.0:")
    port = int(bind.rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [port]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        ref = container[probe]["httpGet"]["port"]
        assert ports.get(ref, ref) == port
    service = _obj("Service")
    (sport,) = service["spec"]["ports"]
    assert ports.get(sport["targetPort"], sport["targetPort"]) == port
    ann = deployment["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port
    assert ann["prometheus.io/path"] == "/metrics"
    image = D.parse(REPO_ROOT / "Dockerfile.serve").final
    assert image.one("EXPOSE").args.split() == [str(port)]


def test_non_root_read_only_rootfs_and_emptydirs(container, deployment):
    pod = deployment["spec"]["template"]["spec"]
    image_user = D.parse(REPO_ROOT / "Dockerfile.serve").final.user
    uid, gid = (int(x) for x in image_user.split(":"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    multiproc = _env(container)["PROMETHEUS_MULTIPROC_DIR"]
    assert "emptyDir" in mounts[multiproc], "the metrics dir must be an emptyDir (empty at each pod start)"
    assert "emptyDir" in mounts["/tmp"]
    assert multiproc == D.parse(REPO_ROOT / "Dockerfile.serve").final.env["PROMETHEUS_MULTIPROC_DIR"]


def test_resources_and_graceful_shutdown(container, deployment):
    res = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res[kind]), kind
    assert _cpu(res["requests"]["cpu"]) <= _cpu(res["limits"]["cpu"])
    assert _mem(res["requests"]["memory"]) <= _mem(res["limits"]["memory"])
    env = _env(container)
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop + int(env["DLQR_GRACEFUL_TIMEOUT"])


def test_service_hpa_pdb_and_monitors_select_the_pods(deployment):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict) -> bool:
        return all(pod_labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    service = _obj("Service")
    assert selects(service["spec"]["selector"])
    assert selects(_obj("PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    hpa = _obj("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    monitor = _obj("ServiceMonitor")
    assert all(
        service["metadata"]["labels"].get(k) == v
        for k, v in monitor["spec"]["selector"]["matchLabels"].items()
    )
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics"}
    # job label = the Service's name label = the job the alert rules select on.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "dlqr-serving"


def test_prometheus_rule_carries_the_same_groups_as_alerts_yml():
    alerts = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert _obj("PrometheusRule")["spec"]["groups"] == alerts["groups"]


def test_image_reference_matches_the_package_version(container):
    import tomllib

    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    name, _, tag = container["image"].partition(":")
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert [(i["name"], i["newTag"]) for i in kust["images"]] == [(name, version)]
    assert tag == version
    compose = yaml.safe_load((REPO_ROOT / "deploy" / "docker-compose.yml").read_text())
    assert compose["services"]["serving"]["image"] == f"{name}:{version}"


def test_liveness_tolerates_saturated_workers(container):
    """A saturated worker answers /healthz within the request deadline plus one request's work."""
    from serving.settings import Settings

    request_timeout = int(_env(container).get("DLQR_REQUEST_TIMEOUT", Settings().request_timeout))
    live = container["livenessProbe"]
    assert live["timeoutSeconds"] >= request_timeout + 5
    assert live["periodSeconds"] * live["failureThreshold"] >= 60


def test_ingress_buffers_requests_with_the_server_limits():
    from serving.settings import Settings

    ingress = _obj("Ingress")
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == f"{Settings().max_body_bytes // 2**20}m"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > Settings().request_timeout
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == _obj("Service")["metadata"]["name"] and backend["port"]["name"] == "http"
