"""The data plane: one decision per bad input at every door (``/predict``, V2, offline scoring),
and its extension points (the resolver, the runner, observers)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from pydantic import TypeAdapter

from dlqr.card import get as get_card
from serving import offline
from serving.dataplane import DataPlane, RequestInfo, resolve_version
from serving.errors import ERROR_SLUG_KEY, ServingError, cli_line, v2_json, v2_status


def _nan_runner(model, x):
    return np.full((len(x), model.card.output_dim), np.nan, dtype=np.float32)


def _v2_request(name, values, shape):
    card = get_card(name)
    return {"inputs": [{"name": card.input_name, "datatype": "FP64", "shape": shape, "data": values}]}


def _predict_door(client, name, instance, version=None):
    r = client.post(f"/predict/{name}" + (f"?version={version}" if version else ""), json=instance)
    body = r.get_json()
    assert r.content_type == "application/problem+json", body
    return r.status_code, body["type"].rsplit("problem-", 1)[1]


def _spy(app):
    """Keep each request's WSGI environ: the V2 body carries only a message, the decision's
    type slug is recorded there (serving.errors.ERROR_SLUG_KEY)."""
    seen = {}
    inner = app.wsgi_app

    def spy(environ, start_response):
        seen["environ"] = environ
        return inner(environ, start_response)

    app.wsgi_app = spy
    return seen


def _v2_door(client, seen, name, request, version=None):
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    r = client.post(path, json=request)
    assert r.content_type == "application/json" and isinstance(r.get_json()["error"], str)
    return r.status_code, seen["environ"][ERROR_SLUG_KEY]


def _offline_door(artifacts, tmp_path, name, line, version=None, plane=None):
    (tmp_path / "in.jsonl").write_text(json.dumps(line) + "\n")
    try:
        model, ctx = offline.load(name, artifacts, version)
        res = offline.score(model, ctx, tmp_path / "in.jsonl", tmp_path / "out.jsonl", skip_invalid=True,
                            progress=False, plane=plane)  # fmt: skip
    except ServingError as exc:  # the model or version is refused before any row
        return exc.status, exc.slug
    assert res.invalid == 1 and len(res.refusals) == 1, res
    return next(iter(res.refusals))


@pytest.fixture
def wine_golden(golden):
    return golden["wine"][0]["input"]


CASES = ["out-of-range", "wrong-shape", "non-finite-output", "unknown-version"]


@pytest.mark.parametrize("case", CASES)
def test_the_same_bad_input_gets_the_same_decision_at_every_door(case, make_app, artifacts, golden, tmp_path):
    app = make_app(ARTIFACTS_DIR=artifacts, MODELS=("wine", "seizure"))
    seen = _spy(app)
    client = app.test_client()
    plane = None
    version = None
    name = "wine"
    instance = dict(golden["wine"][0]["input"])
    card = get_card("wine")
    values = card.rows([TypeAdapter(card.instance).validate_python(instance)], card.features)[0].tolist()
    shape = [1, card.input_dim]
    if case == "out-of-range":
        instance["ph"] = 20.0  # the schema's bound is 14
        values[card.features.index("ph")] = 20.0
    elif case == "wrong-shape":
        name = "seizure"
        instance = {"eeg": [0.0] * 5}
        values, shape = [0.0] * 5, [1, 5]
    elif case == "non-finite-output":  # a model that answers NaN: the runner extension point
        app.extensions["dlqr"].plane.runner = _nan_runner
        plane = DataPlane(runner=_nan_runner)
    elif case == "unknown-version":
        version = "no-such-version"
    want = {
        "out-of-range": (422, "validation-error"),
        "wrong-shape": (422, "validation-error"),
        "non-finite-output": (422, "validation-error"),
        "unknown-version": (404, "unknown-version"),
    }[case]
    assert _predict_door(client, name, instance, version) == want
    v2 = _v2_door(client, seen, name, _v2_request(name, values, shape), version)
    assert v2 == (v2_status(want[0]), want[1])  # the protocol answers a 422 decision with 400
    assert _offline_door(artifacts, tmp_path, name, instance, version, plane) == want


def test_renderers_of_one_error():
    err = ServingError(422, "validation-error", "feature ph: too big")
    assert json.loads(v2_json(err)) == {"error": "feature ph: too big"} and v2_status(422) == 400
    assert v2_status(404) == 404 and v2_status(503) == 503
    assert cli_line(err, "in.csv:3") == "in.csv:3: feature ph: too big"


def test_the_resolver_can_be_replaced_and_the_doors_answer_its_version(repo_two_versions, make_app):
    root, old, new = repo_two_versions
    app = make_app(ARTIFACTS_DIR=root, MODELS=("wine",), VERSION_POLICY="all")
    client = app.test_client()
    plane = app.extensions["dlqr"].plane
    instance = json.loads((root / "wine" / new / "manifest.json").read_text())["golden"][0]["input"]
    assert client.post("/predict/wine", json=instance).get_json()["version"] == new
    seen = []

    def sticky(state, request):  # a routing policy: a header picks the old version
        seen.append(request.door)
        if request.headers.get("X-Route") == "old":
            return state.versions[old].model
        return resolve_version(state, request)

    plane.resolver = sticky
    assert (
        client.post("/predict/wine", json=instance, headers={"X-Route": "old"}).get_json()["version"] == old
    )
    assert client.post("/predict/wine", json=instance).get_json()["version"] == new
    card = get_card("wine")
    row = card.rows([TypeAdapter(card.instance).validate_python(instance)], card.features)[0].tolist()
    r = client.post(
        "/v2/models/wine/infer", json=_v2_request("wine", row, [1, len(row)]), headers={"X-Route": "old"}
    )
    assert r.get_json()["model_version"] == old
    assert seen == ["predict", "predict", "v2"]


@pytest.fixture
def repo_two_versions(artifacts, tmp_path):
    from tests.serving.test_versions import seal_as_version

    root = tmp_path / "artifacts"
    (root / "wine").mkdir(parents=True)
    seal_as_version(artifacts / "wine", root / "wine", "1.9")
    seal_as_version(artifacts / "wine", root / "wine", "1.10")
    return root, "1.9", "1.10"


def test_a_wrapped_runner_sees_one_float32_array_per_request(app_factory_wine, golden):
    app = app_factory_wine
    plane = app.extensions["dlqr"].plane
    calls = []
    inner = plane.runner

    def batcher(model, x):
        calls.append((x.dtype, x.shape))
        return inner(model, x)

    plane.runner = batcher
    r = app.test_client().post("/predict/wine", json={"instances": [g["input"] for g in golden["wine"][:3]]})
    assert r.status_code == 200 and len(r.get_json()["predictions"]) == 3
    assert calls == [(np.float32, (3, get_card("wine").input_dim))]


@pytest.fixture
def app_factory_wine(make_app, artifacts):
    return make_app(ARTIFACTS_DIR=artifacts, MODELS=("wine",))


def test_observers_see_every_prediction_and_never_fail_a_request(app_factory_wine, golden):
    app = app_factory_wine
    plane = app.extensions["dlqr"].plane
    got = []
    done = threading.Event()

    def broken(obs):
        raise RuntimeError("observer bug")

    def recorder(obs):
        got.append(obs)
        done.set()

    plane.add_observer(broken)
    plane.add_observer(recorder)
    client = app.test_client()
    instances = [g["input"] for g in golden["wine"][:2]]
    r = client.post("/predict/wine", json={"instances": instances}, headers={"X-Request-ID": "req-1"})
    assert r.status_code == 200
    assert done.wait(10)
    plane.hub.join()
    obs = got[0]
    assert (obs.model, obs.version, obs.door, obs.request_id) == (
        "wine",
        r.get_json()["version"],
        "predict",
        "req-1",
    )
    assert obs.rows.shape == (2, get_card("wine").input_dim) and obs.outputs.shape == (2, 1)
    assert obs.predictions == r.get_json()["predictions"]
    assert obs.latency_seconds >= obs.inference_seconds > 0
    assert plane.hub.failed == 1  # the broken observer's exception was logged, not raised


def test_observers_never_block_a_full_queue_drops_and_counts():
    plane = DataPlane()
    plane.hub._queue.maxsize = 1
    release = threading.Event()
    plane.add_observer(lambda obs: release.wait(10))
    from serving.dataplane import Observation

    obs = Observation("m", "v", np.zeros((1, 1)), np.zeros((1, 1)), [], 0.0, 0.0, None, "test")
    for _ in range(5):
        plane.hub.publish(obs)  # returns at once even though the observer is stuck
    assert plane.hub.dropped >= 3
    release.set()
    plane.hub.join()


def test_request_info_defaults():
    info = RequestInfo("offline")
    assert info.version is None and info.request_id is None and info.started > 0


def test_per_row_refuses_only_the_non_finite_rows(artifacts, golden):
    from serving.registry import Registry
    from serving.schemas import model_schemas

    card = get_card("wine")
    reg = Registry(
        artifacts, {"wine": model_schemas(card, 4).instance_adapter.validate_python}, names=("wine",)
    )
    reg.load_all()
    model = reg.states["wine"].model

    def second_row_nan(model, x):
        out = np.asarray(model.forward(x), dtype=np.float64)
        out[1] = np.nan
        return out

    plane = DataPlane(reg, runner=second_row_nan)
    instances = [TypeAdapter(card.instance).validate_python(g["input"]) for g in golden["wine"][:3]]
    rows = card.rows(instances, model.features)
    pred = plane.predict(model, rows, RequestInfo("offline"), per_row=True)
    assert list(pred.row_errors) == [1] and pred.row_errors[1].slug == "validation-error"
    assert pred.predictions[1] is None and all(pred.predictions[i] for i in (0, 2))
    whole = DataPlane(reg).predict(model, rows, RequestInfo("offline")).predictions
    assert [pred.predictions[0], pred.predictions[2]] == [whole[0], whole[2]]
    with pytest.raises(ServingError) as exc:  # a request door refuses the whole request
        plane.predict(model, rows, RequestInfo("predict"))
    assert (exc.value.status, exc.value.slug) == (422, "validation-error")
