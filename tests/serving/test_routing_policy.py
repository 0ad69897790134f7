"""The default "routing" version policy in process: routing.json decides, the last good one stays."""

from __future__ import annotations

import pytest

from dlqr import routing as R
from tests.serving.test_versions import _version, _wine_app, seal_as_version


@pytest.fixture
def repo(artifacts, tmp_path):
    """artifacts/wine/{1.9,1.10,2.0}: the tiny wine bundle re-sealed three times."""
    root = tmp_path / "artifacts"
    (root / "wine").mkdir(parents=True)
    for v in ("1.9", "1.10", "2.0"):
        seal_as_version(artifacts / "wine", root / "wine", v)
    return root


def _poll(app):
    return app.extensions["dlqr"].registry.poll()


def _readyz_wine(client):
    return client.get("/readyz").get_json()["models"]["wine"]


def _metric(client, name):
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + "{") and 'model="wine"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_without_routing_file_the_greatest_version_serves_and_the_log_says_so(repo, make_app, capfd):
    client = _wine_app(make_app, repo).test_client()
    assert _version(client, repo)[1]["version"] == "2.0"
    assert "no routing.json" in capfd.readouterr().err


def test_stable_serves_and_a_change_is_picked_up_by_the_poll(repo, make_app):
    R.write(repo / "wine", R.Routing(stable="1.9", shadow=R.Split(version="1.10", percent=5)))
    app = _wine_app(make_app, repo)
    client = app.test_client()
    assert _version(client, repo)[1]["version"] == "1.9"
    states = {v["version"]: v["status"] for v in client.get("/models/wine").get_json()["versions"]}
    assert states == {"2.0": "available", "1.10": "ready", "1.9": "ready"}  # the shadow is loaded too
    assert _readyz_wine(client)["routing"] == {"stable": "1.9", "shadow": {"version": "1.10", "percent": 5.0}}
    assert _poll(app) == []  # nothing changed: no reload
    R.write(repo / "wine", R.Routing(stable="2.0", previous_stable="1.9"))
    assert _poll(app) == ["wine"]
    assert _version(client, repo)[1]["version"] == "2.0"
    assert _version(client, repo, "?version=1.9")[0] == 503  # retired: no longer served


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"stable": "1.9", ', "routing.json: not JSON"),
        ('{"stable": "1.9", "canary": {"version": "2.0", "percent": 150}}', "canary.percent"),
        ('{"stable": "7.7"}', "routing.json names version 7.7, which is not in wine/"),
    ],
)
def test_a_bad_routing_file_keeps_the_last_good_one(repo, make_app, capfd, text, needle):
    R.write(repo / "wine", R.Routing(stable="1.9"))
    app = _wine_app(make_app, repo)
    client = app.test_client()
    assert _metric(client, "dlqr_routing_invalid") == 0
    (repo / "wine" / R.ROUTING_FILE).write_text(text)  # by hand, not atomically
    _poll(app)
    assert _version(client, repo)[1]["version"] == "1.9"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    detail = ready.get_json()["models"]["wine"]
    assert needle in detail["routing_error"] and "the last good routing" in detail["routing_error"]
    assert detail["routing"] == {"stable": "1.9"}
    assert _metric(client, "dlqr_routing_invalid") == 1
    assert "routing refused" in capfd.readouterr().err
    R.write(repo / "wine", R.Routing(stable="1.10"))  # fixed: applied, the metric clears
    _poll(app)
    assert _version(client, repo)[1]["version"] == "1.10"
    assert _metric(client, "dlqr_routing_invalid") == 0
    assert "routing_error" not in _readyz_wine(client) or _readyz_wine(client)["routing_error"] is None


def test_latest_and_pinned_stay_explicit_settings(repo, make_app):
    R.write(repo / "wine", R.Routing(stable="1.9"))
    assert (
        _version(_wine_app(make_app, repo, VERSION_POLICY="latest").test_client(), repo)[1]["version"]
        == "2.0"
    )
    pinned = _wine_app(make_app, repo, VERSION_POLICY="1.10").test_client()
    assert _version(pinned, repo)[1]["version"] == "1.10"
