"""Canary share, routing keys, X-Model-Version and shadow scoring, in process over tiny bundles.

The same behaviour on the real Gunicorn server with the committed bundles is
``tests/serving/test_lifecycle_gunicorn.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlqr import bundle as B
from dlqr import routing as R
from serving import shadow
from tests.serving.bundles import reseal
from tests.serving.test_versions import seal_as_version


def with_threshold(src: Path, model_dir: Path, version: str, threshold: float) -> Path:
    """``src`` (a binary bundle) re-sealed as ``model_dir/version`` with another operating point:
    the same network, so only the decisions of rows between the two thresholds differ."""
    dest = seal_as_version(src, model_dir, version)

    def set_threshold(staging: Path) -> None:
        prep_path = staging / "preprocessing.json"
        prep = json.loads(prep_path.read_text())
        prep["threshold"]["value"] = threshold
        prep_path.write_text(json.dumps(prep, indent=2))

    def golden(manifest: dict) -> None:  # the golden decisions at the new threshold
        for pair in manifest["golden"]:
            p = pair["prediction"]
            key = next(k for k in p if k not in ("probability", "threshold"))
            p["threshold"], p[key] = threshold, p["probability"] >= threshold

    return reseal(dest, set_threshold, golden)


def threshold_of(bundle_dir: Path) -> float:
    return json.loads((bundle_dir / "preprocessing.json").read_text())["threshold"]["value"]


def metric(client, name: str, **labels: str) -> float:
    """The value of one sample of ``name`` whose labels include ``labels`` (0 when absent)."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def wine_repo(artifacts, tmp_path):
    root = tmp_path / "artifacts"
    (root / "wine").mkdir(parents=True)
    for v in ("1", "2", "3"):
        seal_as_version(artifacts / "wine", root / "wine", v)
    return root


def _wine_client(make_app, root):
    return make_app(ARTIFACTS_DIR=root, MODELS=("wine",)).test_client()


def _post(client, golden, query="", headers=None):
    return client.post(f"/predict/wine{query}", json=golden["wine"][0]["input"], headers=headers or {})


def test_canary_share_routing_keys_and_named_versions(wine_repo, make_app, golden):
    R.write(wine_repo / "wine", R.Routing(stable="1", canary=R.Split(version="2", percent=50)))
    client = _wine_client(make_app, wine_repo)
    answered = []  # the version of every 200 answer, for the metric below

    def version(query="", headers=None):
        r = _post(client, golden, query, headers)
        assert r.status_code == 200
        assert r.headers["X-Model-Version"] == r.get_json()["version"]
        answered.append(r.headers["X-Model-Version"])
        return answered[-1]

    seen = [version() for _ in range(200)]
    assert set(seen) == {"1", "2"} and 60 < seen.count("2") < 140  # p ~ 1e-8 outside at P = 50 %
    for key in ("alice", "bob", "carol", "dave"):
        assert len({version(headers={"X-Routing-Key": key}) for _ in range(20)}) == 1, key
    # a named version wins over the split (only loaded versions: 3 is on disk, not in the routing)
    assert {version("?version=1") for _ in range(20)} == {"1"}
    assert _post(client, golden, "?version=3").status_code == 503
    # and the V2 door says the version too
    features = json.loads((wine_repo / "wine" / "1" / "preprocessing.json").read_text())["features"]
    row = [golden["wine"][0]["input"][f] for f in features]
    v2 = client.post("/v2/models/wine/versions/1/infer",
                     json={"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}]})  # fmt: skip
    assert v2.status_code == 200, v2.get_json()
    assert v2.headers["X-Model-Version"] == v2.get_json()["model_version"] == "1"
    answered.append("1")
    # version-labelled metrics, bounded to the versions served (the routing's)
    for v in ("1", "2"):
        assert metric(client, "dlqr_model_version_requests_total", model="wine", version=v) == answered.count(
            v
        )
    assert 'version="3"' not in client.get("/metrics").get_data(as_text=True)


def test_a_canary_that_failed_to_load_never_fails_a_request(wine_repo, make_app, golden):
    onnx = wine_repo / "wine" / "2" / B.ONNX_FILE
    data = bytearray(onnx.read_bytes())
    data[-20] ^= 0xFF
    onnx.write_bytes(bytes(data))
    R.write(wine_repo / "wine", R.Routing(stable="1", canary=R.Split(version="2", percent=100)))
    client = _wine_client(make_app, wine_repo)
    assert {_post(client, golden).headers["X-Model-Version"] for _ in range(10)} == {"1"}


@pytest.fixture
def seizure_pair(artifacts, tmp_path):
    """seizure/1 (the tiny bundle, threshold 0.5) and seizure/2 (the same network at threshold 0.56)."""
    root = tmp_path / "artifacts"
    (root / "seizure").mkdir(parents=True)
    seal_as_version(artifacts / "seizure", root / "seizure", "1")
    with_threshold(artifacts / "seizure", root / "seizure", "2", 0.56)
    return root


def _seizure_app(make_app, root, percent=100.0):
    R.write(root / "seizure", R.Routing(stable="1", shadow=R.Split(version="2", percent=percent)))
    return make_app(ARTIFACTS_DIR=root, MODELS=("seizure",))


def test_shadow_disagreement_on_the_same_network_at_another_threshold(seizure_pair, make_app, golden):
    app = _seizure_app(make_app, seizure_pair)
    client = app.test_client()
    t1 = threshold_of(seizure_pair / "seizure" / "1")
    probs = []
    instances = [g["input"] for g in golden["seizure"]]
    for inst in instances:
        r = client.post("/predict/seizure", json=inst)
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"
        probs.append(r.get_json()["predictions"][0]["probability"])
    app.extensions["dlqr"].plane.hub.join()
    flips = sum((p >= t1) != (p >= 0.56) for p in probs)
    assert flips == 2  # the golden probabilities are 0.475, 0.5, 0.594, 0.558
    labels = {"model": "seizure", "version": "2", "against": "1"}
    assert metric(client, "dlqr_shadow_requests_total", outcome="scored", **labels) == len(instances)
    assert metric(client, "dlqr_shadow_rows_total", **labels) == len(instances)
    assert metric(client, "dlqr_shadow_disagreements_total", **labels) == flips
    # the same network: every probability difference is 0 (the first bucket holds them all)
    assert metric(client, "dlqr_shadow_probability_difference_bucket", le="0.001", **labels) == len(instances)
    # one latency per shadow run: the requests of one burst of observations share a stacked run
    assert 1 <= metric(client, "dlqr_shadow_latency_seconds_count", **labels) <= len(instances)
    # a named version is not shadowed
    client.post("/predict/seizure?version=1", json=instances[0])
    app.extensions["dlqr"].plane.hub.join()
    assert metric(client, "dlqr_shadow_rows_total", **labels) == len(instances)


def test_shadow_answers_are_unchanged_and_skipped_when_busy_or_broken(seizure_pair, make_app, golden):
    instances = [g["input"] for g in golden["seizure"]]
    R.write(seizure_pair / "seizure", R.Routing(stable="1"))
    plain = make_app(ARTIFACTS_DIR=seizure_pair, MODELS=("seizure",)).test_client()
    without = [plain.post("/predict/seizure", json=i).data for i in instances]
    app = _seizure_app(make_app, seizure_pair)
    client = app.test_client()
    assert [client.post("/predict/seizure", json=i).data for i in instances] == without
    app.extensions["dlqr"].plane.hub.join()
    scorer = next(o for o in app.extensions["dlqr"].plane.hub.observers if isinstance(o, shadow.ShadowScorer))
    labels = {"model": "seizure", "version": "2", "against": "1"}
    scorer.busy = lambda: True
    client.post("/predict/seizure", json=instances[0])
    app.extensions["dlqr"].plane.hub.join()
    assert metric(client, "dlqr_shadow_requests_total", outcome="skipped_busy", **labels) == 1
    scorer.busy = lambda: False
    shadow_model = app.extensions["dlqr"].registry.states["seizure"].versions["2"].model

    def broken(x):
        raise RuntimeError("shadow bug")

    shadow_model.forward = broken
    r = client.post("/predict/seizure", json=instances[0])
    assert r.status_code == 200 and r.data == without[0]
    app.extensions["dlqr"].plane.hub.join()
    assert metric(client, "dlqr_shadow_requests_total", outcome="failed", **labels) == 1


def test_no_shadow_in_the_routing_publishes_no_observation(wine_repo, make_app, golden):
    R.write(wine_repo / "wine", R.Routing(stable="1"))
    # The drift monitor (on by default) is an observer of its own: off here, to see the shadow alone.
    app = make_app(ARTIFACTS_DIR=wine_repo, MODELS=("wine",), MONITOR_ENABLED=False)
    assert _post(app.test_client(), golden).status_code == 200
    assert app.extensions["dlqr"].plane.hub.observers == []


def test_a_burst_of_observations_is_scored_in_one_stacked_run(seizure_pair, make_app, golden):
    app = _seizure_app(make_app, seizure_pair)
    client = app.test_client()
    instances = [g["input"] for g in golden["seizure"]]
    hub = app.extensions["dlqr"].plane.hub
    scorer = next(o for o in hub.observers if isinstance(o, shadow.ShadowScorer))
    shadow_model = app.extensions["dlqr"].registry.states["seizure"].versions["2"].model
    runs = []
    forward = shadow_model.forward
    shadow_model.forward = lambda x: runs.append(len(x)) or forward(x)
    hub.observers.remove(scorer)  # collect the observations, then hand them over as one burst
    seen = []
    hub.add(seen.append)
    for inst in instances:
        assert client.post("/predict/seizure", json=inst).status_code == 200
    hub.join()
    scorer.observe_many([o for o in seen if o.model == "seizure"])
    assert runs == [len(instances)]  # one run over every request's rows
    labels = {"model": "seizure", "version": "2", "against": "1"}
    assert metric(client, "dlqr_shadow_requests_total", outcome="scored", **labels) == len(instances)
    assert metric(client, "dlqr_shadow_rows_total", **labels) == len(instances)
    assert metric(client, "dlqr_shadow_latency_seconds_count", **labels) == 1
