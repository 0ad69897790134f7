"""deploy/docker-compose.yml (+ compose.models.yml): valid Compose, consistent with the image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import PurePosixPath

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.deploy import dockerfile as D

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
MODELS_OVERLAY = DEPLOY / "compose.models.yml"


def _load(path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose():
    return _load(COMPOSE)


@pytest.fixture(scope="module")
def image():
    return D.parse(REPO_ROOT / "Dockerfile.serve").final


@pytest.mark.parametrize("path", [COMPOSE, MODELS_OVERLAY], ids=lambda p: p.name)
def test_valid_against_the_compose_specification(path):
    pytest.importorskip(
        "check_jsonschema", reason="pip install check-jsonschema (vendors the Compose schema)"
    )
    res = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_serving_service_builds_the_serving_image_from_the_repo_root(compose):
    build = compose["services"]["serving"]["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == REPO_ROOT
    assert build["dockerfile"] == "Dockerfile.serve"


def test_port_mapping_matches_the_gunicorn_bind(compose, image):
    svc = compose["services"]["serving"]
    bind = svc["environment"].get("DLQR_BIND", image.env["DLQR_BIND"])
    container_port = int(bind.rpartition(":")[2])
    assert bind.startswith("0.0.0.0:")
    assert "ports" not in svc, "clients reach Gunicorn through the buffering proxy only"
    assert [int(p) for p in svc["expose"]] == [container_port]
    assert image.one("EXPOSE").args.split() == [str(container_port)]
    proxy = compose["services"]["proxy"]
    assert proxy["environment"]["DLQR_UPSTREAM"] == f"serving:{container_port}"
    published = [p.rsplit(":", 1) for p in proxy["ports"]]
    assert [int(target) for _, target in published] == [int(proxy["environment"]["NGINX_PORT"])]
    assert all(host.startswith("127.0.0.1:") for host, _ in published)


def test_proxy_renders_the_repo_template_with_limits_matching_the_server(compose):
    from serving.settings import Settings

    proxy = compose["services"]["proxy"]
    assert ":" in proxy["image"] and not proxy["image"].endswith(":latest")
    source, target, mode = proxy["volumes"][0].split(":")
    assert (COMPOSE.parent / source).resolve() == DEPLOY / "nginx" / "dlqr.conf.template"
    assert target.startswith("/etc/nginx/templates/") and target.endswith(".template") and mode == "ro"
    template = (DEPLOY / "nginx" / "dlqr.conf.template").read_text()
    for var in ("DLQR_UPSTREAM", "NGINX_PORT", "NGINX_TEMP"):
        assert "${" + var + "}" in template and var in proxy["environment"]
    assert proxy["environment"]["NGINX_TEMP"] in proxy["tmpfs"][0]
    defaults = Settings()
    assert f"client_max_body_size {defaults.max_body_bytes // (1024 * 1024)}m;" in template
    assert f"client_header_timeout {defaults.read_timeout}s;" in template
    assert f"client_body_timeout {defaults.read_timeout}s;" in template
    read_timeout = int(template.split("proxy_read_timeout ")[1].split("s;")[0])
    assert read_timeout > defaults.request_timeout  # the service answers its own deadline first


def test_serving_runs_hardened_with_writable_tmpfs_only_where_needed(compose, image):
    svc = compose["services"]["serving"]
    assert svc["user"] == image.user and not svc["user"].startswith("0")
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    tmpfs = {t.split(":", 1)[0]: t.split(":", 1)[1] if ":" in t else "" for t in svc["tmpfs"]}
    multiproc = svc["environment"].get("PROMETHEUS_MULTIPROC_DIR", image.env["PROMETHEUS_MULTIPROC_DIR"])
    assert multiproc in tmpfs, "the multi-process dir must be a tmpfs: writable, and empty at every start"
    uid, gid = image.user.split(":")
    assert f"uid={uid}" in tmpfs[multiproc] and f"gid={gid}" in tmpfs[multiproc]
    assert "/tmp" in tmpfs  # Gunicorn's worker heartbeat files
    limits = svc["deploy"]["resources"]["limits"]
    assert limits["memory"] and limits["cpus"]


def test_prometheus_service_scrapes_the_serving_service(compose):
    prom = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"] if v.startswith("./")}
    config_dir = DEPLOY / mounts["/etc/prometheus"]
    config_arg = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_file = PurePosixPath(config_arg.split("=", 1)[1])
    assert str(config_file.parent) == "/etc/prometheus"
    config = _load(config_dir / config_file.name)
    for rule_file in config["rule_files"]:
        assert (config_dir / rule_file).is_file(), rule_file
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "dlqr-serving")
    bind = compose["services"]["serving"]["environment"]["DLQR_BIND"]
    assert job["static_configs"][0]["targets"] == [f"serving:{bind.rpartition(':')[2]}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert ":" in prom["image"] and not prom["image"].endswith(":latest")


def test_models_overlay_mounts_a_bundle_dir_read_only_at_the_artifacts_dir():
    svc = _load(MODELS_OVERLAY)["services"]["serving"]
    (volume,) = svc["volumes"]
    assert volume["target"] == svc["environment"]["DLQR_ARTIFACTS_DIR"]
    assert volume["read_only"] is True
    assert "DLQR_MODELS_DIR" in volume["source"]
