"""deploy/prometheus: promtool validates the config and rules and runs the alert unit tests."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT

PROM_DIR = REPO_ROOT / "deploy" / "prometheus"
#: The metric names agreed with serving (serving/metrics.py).
SERVICE_METRICS = {
    "dlqr_http_requests_total",
    "dlqr_http_request_duration_seconds_bucket",
    "dlqr_model_inference_seconds",
    "dlqr_model_batch_size",
    "dlqr_model_predictions_total",
    "dlqr_input_out_of_range_total",
    "dlqr_model_info",
    "dlqr_model_ready",
    # serving/monitor.py (tests/serving/test_monitor.py checks them in /metrics)
    "dlqr_drift_psi",
    "dlqr_drift_rows_total",
    "dlqr_drift_bin_total",
    "dlqr_drift_reference_share",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is not installed (as root: scripts/install_prometheus.sh, "
            "i.e. apt-get install prometheus)"
        )
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=PROM_DIR, capture_output=True, text=True, timeout=120)


def test_check_config(promtool):
    res = _run(promtool, "check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_check_rules(promtool):
    res = _run(promtool, "check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_alert_unit_tests(promtool):
    res = _run(promtool, "test", "rules", "alerts.test.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_has_a_unit_test_that_fires_it():
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROM_DIR / "alerts.test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert alerts == fired, f"alerts without a firing unit test: {sorted(alerts - fired)}"
    # The four concerns are all covered.
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    for metric in (
        "dlqr_model_ready",
        "dlqr_http_requests_total",
        "dlqr_http_request_duration_seconds_bucket",
        "dlqr_input_out_of_range_total",
    ):
        assert metric in exprs, metric


def test_rules_only_use_metrics_the_service_exports():
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    promql_words = {
        "sum",
        "by",
        "rate",
        "min",
        "absent",
        "on",
        "group_left",
        "histogram_quantile",
        "up",
        "job",
        "instance",
        "model",
        "feature",
        "le",
        "status",
        "endpoint",
        "and",
        "max",
        "increase",
        "version",
        "bin",
        "clamp_min",
        "ln",
    }
    names = {w for w in re.findall(r"[a-z_][a-z0-9_]*", re.sub(r'"[^"]*"', "", exprs))} - promql_words
    names -= {"m", "h"}  # durations like [5m], [1h]
    assert names <= SERVICE_METRICS, names - SERVICE_METRICS
