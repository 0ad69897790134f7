"""A real Prometheus (Debian's package) scrapes the rehearsed server with deploy/'s config.

The test starts Prometheus on loopback with deploy/prometheus/prometheus.yml,
changed only where a test must: the targets point at the rehearsed server and
at this Prometheus, and scrape/evaluation run every second instead of 15 s so
the test takes seconds. The alert rules file is used as is. It then asks
Prometheus's HTTP API for the service's metrics and their labels, and checks
the rules evaluate against the real series: an input outside the training
range puts DlqrInputOutOfRange into pending for that model and feature.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from dlqr import repository
from dlqr.card import names as _model_names
from tests.conftest import REPO_ROOT
from tests.deploy.conftest import RunningServer, free_port, http, stop_process_group

MODEL_NAMES = _model_names()

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PROM_DIR = REPO_ROOT / "deploy" / "prometheus"
JOB = "dlqr-serving"


def _prometheus_binaries() -> tuple[str, str]:
    prom, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prom or not promtool:
        pytest.skip(
            "Prometheus is not installed (as root: scripts/install_prometheus.sh, "
            "i.e. apt-get install prometheus)"
        )
    return prom, promtool


class Prometheus:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"

    def api(self, path: str, **params: str) -> object:
        query = urllib.parse.urlencode(params)
        status, _, body = http(
            "GET", f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""), timeout=10
        )
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", (path, params, body[:1000])
        return doc["data"]

    def query(self, promql: str) -> list[dict]:
        return self.api("query", query=promql)["result"]

    def wait_for(self, what: str, fn, timeout: float = 60):
        """Poll ``fn`` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = fn()
            if last:
                return last
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; last answer: {last!r}")


@pytest.fixture(scope="module")
def prometheus(serving_container: RunningServer, rehearsal_root: Path):
    prom_bin, promtool = _prometheus_binaries()
    port = free_port()
    workdir = rehearsal_root / "prometheus"
    workdir.mkdir()
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert JOB in jobs, f"deploy/prometheus/prometheus.yml has no job {JOB!r}"
    jobs[JOB]["static_configs"] = [{"targets": [f"127.0.0.1:{serving_container.port}"]}]
    jobs[JOB]["scrape_timeout"] = "1s"
    if "prometheus" in jobs:
        jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    for rule_file in config.get("rule_files", []):
        shutil.copy(PROM_DIR / rule_file, workdir / rule_file)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    check = subprocess.run(
        [promtool, "check", "config", str(workdir / "prometheus.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    log_path = workdir / "prometheus.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                prom_bin,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        prom = Prometheus(port)
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if http("GET", f"{prom.url}/-/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        yield prom
    finally:
        stop_process_group(proc, grace=10)


def _predict(server: RunningServer, model: str, instances: list[dict]) -> None:
    status, _, body = http("POST", f"{server.base_url}/predict/{model}", {"instances": instances})
    assert status == 200, body[:1000]


def test_prometheus_scrapes_the_service_metrics_with_their_labels(
    serving_container: RunningServer, prometheus
):
    artifacts = Path(serving_container.env["DLQR_ARTIFACTS_DIR"])
    manifests = {
        m: json.loads((repository.latest_dir(artifacts / m) / "manifest.json").read_text())
        for m in MODEL_NAMES
    }
    for model, manifest in manifests.items():
        _predict(serving_container, model, [manifest["golden"][0]["input"]])

    targets = prometheus.wait_for(
        "the serving target to be up",
        lambda: [
            t
            for t in prometheus.api("targets")["activeTargets"]
            if t["labels"]["job"] == JOB and t["health"] == "up"
        ],
    )
    assert targets[0]["scrapeUrl"] == f"{serving_container.base_url}/metrics"

    info = prometheus.wait_for("dlqr_model_info", lambda: prometheus.query(f'dlqr_model_info{{job="{JOB}"}}'))
    by_model = {s["metric"]["model"]: s["metric"] for s in info}
    assert set(by_model) == set(MODEL_NAMES)
    for model, labels in by_model.items():
        assert labels["version"] == manifests[model]["version"]
        assert labels["sha256"] in manifests[model]["files"].values(), labels

    ready = prometheus.query(f'min by (model) (dlqr_model_ready{{job="{JOB}"}})')
    assert {s["metric"]["model"]: float(s["value"][1]) for s in ready} == {m: 1.0 for m in MODEL_NAMES}

    predict_endpoints = {f"/predict/{m}" for m in MODEL_NAMES}
    requests = prometheus.wait_for(
        "dlqr_http_requests_total for the three predictions",
        lambda: [
            s
            for s in prometheus.query(
                f'dlqr_http_requests_total{{job="{JOB}", method="POST", status="200"}} > 0'
            )
            if s["metric"].get("endpoint") in predict_endpoints
        ],
    )
    assert {s["metric"]["endpoint"] for s in requests} == predict_endpoints
    # Every per-model series counted this test's predictions (> 0), not just exists.
    for name in (
        "dlqr_http_request_duration_seconds_count",
        "dlqr_model_inference_seconds_count",
        "dlqr_model_batch_size_count",
        "dlqr_model_predictions_total",
    ):
        prometheus.wait_for(
            f"{name} > 0 for every model",
            lambda n=name: (
                {
                    s["metric"].get("model")
                    for s in prometheus.query(f'sum by (model) ({n}{{job="{JOB}", model!=""}}) > 0')
                }
                == set(MODEL_NAMES)
            ),
        )


def test_alert_rules_evaluate_on_the_real_series(serving_container: RunningServer, prometheus):
    artifacts = Path(serving_container.env["DLQR_ARTIFACTS_DIR"])
    wine = repository.latest_dir(artifacts / "wine")
    manifest = json.loads((wine / "manifest.json").read_text())
    prep = json.loads((wine / "preprocessing.json").read_text())
    normal = manifest["golden"][0]["input"]
    feature, high = _out_of_range_feature(prep)
    odd = dict(normal, **{feature: high})

    # rate() needs the counters to grow between two scrapes: one round to create
    # the series, then (after a scrape) a second round with 1 odd input in 4.
    _predict(serving_container, "wine", [odd, normal])
    prometheus.wait_for(
        "the first out-of-range sample",
        lambda: prometheus.query(
            f'dlqr_input_out_of_range_total{{job="{JOB}", model="wine", feature="{feature}"}}'
        ),
    )
    time.sleep(2)
    _predict(serving_container, "wine", [odd, normal, normal, normal])

    alerts = prometheus.wait_for(
        "DlqrInputOutOfRange to be pending or firing",
        lambda: [
            a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == "DlqrInputOutOfRange"
        ],
    )
    assert {(a["labels"]["model"], a["labels"]["feature"]) for a in alerts} == {("wine", feature)}

    groups = prometheus.api("rules")["groups"]
    expected = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in expected)
    assert sum(len(g["rules"]) for g in groups) == sum(len(g["rules"]) for g in expected)
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule  # e.g. no many-to-many matching errors on real labels
    # A healthy service is not alerted on.
    active = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]}
    assert not active & {
        "DlqrServingDown",
        "DlqrModelNotReady",
        "DlqrReadinessMetricAbsent",
        "DlqrHighServerErrorRate",
    }, active


def _out_of_range_feature(prep: dict) -> tuple[str, float]:
    """A wine feature and a physically valid value above its training maximum."""
    ranges = prep.get("feature_ranges")
    assert ranges, f"wine preprocessing.json has no feature_ranges: keys {sorted(prep)}"
    feature = "residual_sugar"  # any positive sugar content is physically valid
    hi = float(ranges["max"][prep["features"].index(feature)])
    return feature, round(hi * 1.5 + 1, 3)
