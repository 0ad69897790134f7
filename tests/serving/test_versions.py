"""Versioned repository and hot swap, in process: layouts, policies, ?version=, verified swaps,
refusals, removal, the watcher thread and the worker's SIGHUP."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import shutil
import signal
import threading
import time
import weakref

import pytest

from dlqr import repository
from tests.conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location("chaos_swap", REPO_ROOT / "scripts" / "chaos_swap.py")
chaos_swap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chaos_swap)
seal_as_version = chaos_swap.seal_as_version


@pytest.fixture
def repo(artifacts, tmp_path):
    """artifacts/wine/1.9/ (the tiny wine bundle re-sealed as version 1.9), no other model."""
    root = tmp_path / "artifacts"
    (root / "wine").mkdir(parents=True)
    seal_as_version(artifacts / "wine", root / "wine", "1.9")
    return root


def _wine_app(make_app, root, **kw):
    return make_app(ARTIFACTS_DIR=root, MODELS=("wine",), **kw)


def _instance(root):
    bundle = repository.latest_dir(root / "wine")
    return json.loads((bundle / "manifest.json").read_text())["golden"][0]["input"]


def _version(client, root, query=""):
    r = client.post(f"/predict/wine{query}", json=_instance(root))
    return r.status_code, r.get_json()


# ------------------------------------------------------------------ layout and policy


def test_natural_version_order_and_scan_skip_hidden_dirs(tmp_path):
    for v in ("1.9", "1.10", ".1.11.tmp-x", "2026.01.01.000000"):
        (tmp_path / v).mkdir()
        (tmp_path / v / "manifest.json").write_text("{}")
    assert [c.version for c in repository.scan(tmp_path)] == ["2026.01.01.000000", "1.10", "1.9"]
    assert sorted(["v10", "v9", "v1"], key=repository.version_key) == ["v1", "v9", "v10"]


def test_policy_parsing():
    p = repository.parse_policy("wine:1.9, digit:all")
    assert (p.for_model("wine"), p.for_model("digit"), p.for_model("seizure")) == ("1.9", "all", "latest")
    assert repository.parse_policy("all").for_model("x") == "all"
    assert repository.parse_policy("").for_model("x") == "latest"
    with pytest.raises(repository.PolicyError, match="not 'routing', 'latest'"):
        repository.parse_policy("wine:../x")


def test_a_flat_bundle_is_served_as_one_version(app, client):
    wine = client.get("/models/wine").get_json()
    assert wine["version_policy"] == "routing"  # the default; no routing file: as latest
    assert [(v["version"], v["status"]) for v in wine["versions"]] == [(wine["version"], "ready")]


def test_latest_serves_the_greatest_version_and_others_stay_on_disk(repo, artifacts, make_app):
    seal_as_version(artifacts / "wine", repo / "wine", "1.10")  # natural order: 1.10 > 1.9
    client = _wine_app(make_app, repo).test_client()
    status, body = _version(client, repo)
    assert status == 200 and body["version"] == "1.10"
    states = {v["version"]: v["status"] for v in client.get("/models/wine").get_json()["versions"]}
    assert states == {"1.10": "ready", "1.9": "available"}
    status, body = _version(client, repo, "?version=1.9")
    assert status == 503 and "not served" in body["detail"] and "policy: routing" in body["detail"]


def test_policy_all_serves_every_version_by_query_and_v2_path(repo, artifacts, make_app):
    seal_as_version(artifacts / "wine", repo / "wine", "1.10")
    client = _wine_app(make_app, repo, VERSION_POLICY="all").test_client()
    assert _version(client, repo)[1]["version"] == "1.10"  # default: the greatest
    assert _version(client, repo, "?version=1.9")[1]["version"] == "1.9"
    md = client.get("/v2/models/wine").get_json()
    assert md["versions"] == ["1.10", "1.9"]
    assert client.get("/v2/models/wine/versions/1.9").get_json()["parameters"]["version"] == "1.9"
    assert client.get("/v2/models/wine/versions/1.9/ready").get_json() == {"name": "wine", "ready": True}


def test_pinned_version(repo, artifacts, make_app):
    seal_as_version(artifacts / "wine", repo / "wine", "1.10")
    client = _wine_app(make_app, repo, VERSION_POLICY="wine:1.9").test_client()
    assert _version(client, repo)[1]["version"] == "1.9"
    assert client.get("/models/wine").get_json()["version_policy"] == "pinned 1.9"


def test_a_pinned_version_that_is_absent_is_not_ready(repo, make_app):
    client = _wine_app(make_app, repo, VERSION_POLICY="7.0").test_client()
    status, body = _version(client, repo)
    assert status == 503 and "pinned version '7.0' is not in" in body["detail"]


def test_a_pinned_version_that_is_absent_writes_one_log_line(repo, make_app, caplog):
    with caplog.at_level("ERROR", logger="serving.registry"):
        app = _wine_app(make_app, repo, VERSION_POLICY="7.0")
        app.extensions["dlqr"].registry.refresh("wine")  # a poll with nothing changed: no second line
    lines = [r for r in caplog.records if getattr(r, "event", None) == "pinned_version_missing"]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].version == "7.0" and lines[0].found == ["1.9"]
    assert "pinned version '7.0' is not in" in lines[0].getMessage()


def test_unknown_version_is_404_problem_json(repo, make_app):
    client = _wine_app(make_app, repo).test_client()
    r = client.post("/predict/wine?version=3.0", json=_instance(repo))
    assert r.status_code == 404 and r.content_type == "application/problem+json"
    assert r.get_json()["type"].endswith("unknown-version") and "1.9" in r.get_json()["detail"]
    r = client.post("/v2/models/wine/versions/3.0/infer", json={"inputs": []})
    assert r.status_code == 404 and "no version '3.0'" in r.get_json()["error"]


def test_a_directory_named_unlike_its_manifest_version_is_refused(repo, make_app):
    os.rename(repo / "wine" / "1.9", repo / "wine" / "2.0")
    state = _wine_app(make_app, repo).extensions["dlqr"].registry.states["wine"]
    assert state.status == "failed" and "must be named after its manifest's version" in state.reason


def test_migrate_flat_keeps_the_version_and_serves_it(artifacts, tmp_path, make_app):
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts / "wine", root / "wine")
    version = json.loads((root / "wine" / "manifest.json").read_text())["version"]
    dest = repository.migrate_flat(root / "wine")
    assert dest == root / "wine" / version and not (root / "wine" / "manifest.json").exists()
    assert sorted(p.name for p in (root / "wine").iterdir()) == [version]
    client = _wine_app(make_app, root).test_client()
    assert _version(client, root)[1]["version"] == version


# ------------------------------------------------------------------------- hot swap


def _metric(client, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{want}}}")


def test_good_new_version_is_swapped_in_and_the_old_one_freed(repo, artifacts, make_app):
    app = _wine_app(make_app, repo)
    reg, client = app.extensions["dlqr"].registry, app.test_client()
    old = weakref.ref(reg.states["wine"].model)
    assert reg.poll() == []  # nothing changed: no reload
    seal_as_version(artifacts / "wine", repo / "wine", "1.10")
    assert reg.poll() == ["wine"]
    assert _version(client, repo)[1]["version"] == "1.10"
    gc.collect()
    assert old() is None, "the retired version is still referenced"
    assert _metric(client, "dlqr_model_info", model="wine", version="1.10") == 1.0
    assert _metric(client, "dlqr_model_info", model="wine", version="1.9") == 0.0


def test_a_request_in_flight_finishes_on_the_old_version(repo, artifacts, make_app):
    app = _wine_app(make_app, repo)
    reg = app.extensions["dlqr"].registry
    model = reg.states["wine"].model
    entered, release = threading.Event(), threading.Event()
    fast = model.forward

    def slow(x):
        entered.set()
        assert release.wait(10)
        return fast(x)

    model.forward = slow
    result = {}
    t = threading.Thread(
        target=lambda: result.update(r=app.test_client().post("/predict/wine", json=_instance(repo)))
    )
    t.start()
    assert entered.wait(10)
    seal_as_version(artifacts / "wine", repo / "wine", "1.10")
    reg.poll()  # switches while the request above is inside the old model's forward pass
    assert reg.states["wine"].model.version == "1.10"
    release.set()
    t.join(10)
    assert result["r"].status_code == 200 and result["r"].get_json()["version"] == "1.9"
    assert _version(app.test_client(), repo)[1]["version"] == "1.10"


@pytest.mark.parametrize(
    ("defect", "file", "fragment"),
    [
        ("sha", "model.onnx", "sha256 mismatch for model.onnx"),
        ("golden", "model.onnx", "golden pair 0 mismatch"),
    ],
)
def test_a_bad_new_version_is_refused_and_the_old_one_keeps_serving(
    repo, artifacts, make_app, capsys, defect, file, fragment
):
    app = _wine_app(make_app, repo)
    reg, client = app.extensions["dlqr"].registry, app.test_client()
    seal_as_version(artifacts / "wine", repo / "wine", "1.10", defect)
    assert reg.poll() == ["wine"]
    assert _version(client, repo)[1]["version"] == "1.9"
    versions = {v["version"]: v for v in client.get("/models/wine").get_json()["versions"]}
    assert versions["1.10"]["status"] == "failed" and fragment in versions["1.10"]["reason"]
    assert versions["1.10"]["file"] == file and versions["1.9"]["status"] == "ready"
    assert _metric(client, "dlqr_model_refused_total", model="wine") == 1.0
    err = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"model_refused"' in line]
    assert err and err[-1]["level"] == "ERROR" and err[-1]["file"].endswith(f"1.10/{file}")
    assert reg.poll() == []  # refused once: not retried until the directory changes


def test_removing_the_served_version_falls_back_and_removing_all_is_not_ready(repo, artifacts, make_app):
    seal_as_version(artifacts / "wine", repo / "wine", "1.10")
    app = _wine_app(make_app, repo)
    reg, client = app.extensions["dlqr"].registry, app.test_client()
    assert _version(client, repo)[1]["version"] == "1.10"
    shutil.rmtree(repo / "wine" / "1.10")
    assert reg.poll() == ["wine"]
    assert _version(client, repo)[1]["version"] == "1.9"
    assert [v["version"] for v in client.get("/models/wine").get_json()["versions"]] == ["1.9"]
    instance = _instance(repo)
    shutil.rmtree(repo / "wine" / "1.9")
    reg.poll()
    r = client.post("/predict/wine", json=instance)
    assert r.status_code == 503 and client.get("/v2/models/wine/ready").status_code == 503


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_watcher_thread_picks_up_a_new_version_within_the_poll_interval(repo, artifacts, make_app):
    app = _wine_app(make_app, repo, WATCH=True, POLL_SECONDS=0.2)
    reg, watcher = app.extensions["dlqr"].registry, app.extensions["dlqr_watcher"]
    try:
        seal_as_version(artifacts / "wine", repo / "wine", "1.10")
        t0 = time.monotonic()
        assert _wait_for(lambda: reg.states["wine"].model.version == "1.10")
        assert time.monotonic() - t0 < 5
    finally:
        watcher.stop()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_sighup_makes_the_worker_rescan_at_once(repo, artifacts, make_app):
    app = _wine_app(make_app, repo, WATCH=True, POLL_SECONDS=0)  # no polling: only the signal
    reg, watcher = app.extensions["dlqr"].registry, app.extensions["dlqr_watcher"]
    try:
        seal_as_version(artifacts / "wine", repo / "wine", "1.10")
        time.sleep(0.3)
        assert reg.states["wine"].model.version == "1.9"
        os.kill(os.getpid(), signal.SIGHUP)
        assert _wait_for(lambda: reg.states["wine"].model.version == "1.10")
    finally:
        watcher.stop()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_version_settings_fail_fast():
    from serving.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match=r"^DLQR_VERSION_POLICY='wine:': "):
        Settings.from_env(version_policy="wine:")
    with pytest.raises(SettingsError, match=r"^DLQR_POLL_SECONDS=-1: "):
        Settings.from_env(poll_seconds=-1)
