"""Open Inference Protocol v2 in process: same validation and answers as /predict, metrics under the
same model labels, the cards' tensor declarations, and the protocol's error bodies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import TypeAdapter

from dlqr.card import get as get_card

MODELS = ("wine", "seizure", "digit")


def _rows(name, instances):
    card = get_card(name)
    adapter = TypeAdapter(card.instance)
    return card.rows([adapter.validate_python(i) for i in instances], card.features)


def _request(name, rows, **extra):
    card = get_card(name)
    data = rows.astype(np.int64) if card.input_datatype == "UINT8" else rows
    return {
        "inputs": [{"name": card.input_name, "datatype": card.input_datatype, "shape": list(rows.shape),
                    "data": data.ravel().tolist()}],
        **extra,
    }  # fmt: skip


def _metric(client, name, **labels):
    total = 0.0
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("name", MODELS)
def test_v2_answers_equal_predict_answers_on_the_golden_pairs(client, golden, name):
    instances = [g["input"] for g in golden[name]]
    preds = client.post(f"/predict/{name}", json={"instances": instances}).get_json()["predictions"]
    body = client.post(f"/v2/models/{name}/infer", json=_request(name, _rows(name, instances))).get_json()
    outputs = {o["name"]: o for o in body["outputs"]}
    for t in get_card(name).task.tensor_outputs():
        data = np.asarray(outputs[t.name]["data"]).reshape(outputs[t.name]["shape"])
        assert data.tolist() == [p[t.key] for p in preds], t.name
    raw = np.asarray(outputs["raw_output"]["data"]).reshape(outputs["raw_output"]["shape"])
    np.testing.assert_allclose(raw, [g["raw_output"] for g in golden[name]], rtol=1e-5, atol=1e-5)


def test_tensor_outputs_follow_the_task():
    assert [(t.name, t.datatype, t.dims) for t in get_card("wine").task.tensor_outputs()] == [
        ("alcohol", "FP64", ())
    ]
    assert [(t.name, t.datatype) for t in get_card("seizure").task.tensor_outputs()] == [
        ("probability", "FP32"), ("seizure", "BOOL")]  # fmt: skip
    digit = {t.name: (t.datatype, t.dims) for t in get_card("digit").task.tensor_outputs()}
    assert digit["digit"] == ("INT64", ()) and digit["probabilities"] == ("FP32", (10,))


def test_v2_traffic_counts_under_the_same_model_labels(make_app, artifacts, golden):
    client = make_app(ARTIFACTS_DIR=artifacts, MODELS=("seizure",)).test_client()
    instances = [g["input"] for g in golden["seizure"]]
    before = _metric(client, "dlqr_model_batch_size_count", model="seizure")
    r = client.post("/v2/models/seizure/infer", json=_request("seizure", _rows("seizure", instances)))
    assert r.status_code == 200
    assert _metric(client, "dlqr_model_batch_size_count", model="seizure") == before + 1
    assert _metric(client, "dlqr_model_predictions_total", model="seizure") == len(instances)
    assert _metric(client, "dlqr_http_request_duration_seconds_count", model="seizure") >= 1
    assert _metric(client, "dlqr_http_requests_total", endpoint="/v2/models/seizure/infer", status="200") == 1


def test_v2_applies_the_cards_validation_with_the_offending_feature(client, golden):
    inst = dict(golden["wine"][0]["input"], ph=15.0)  # pH is bounded to 0..14 by the wine card
    assert client.post("/predict/wine", json=inst).status_code == 422
    r = client.post(
        "/v2/models/wine/infer", json=_request("wine", _rows("wine", [golden["wine"][0]["input"]]))
    )
    assert r.status_code == 200
    req = _request("wine", _rows("wine", [golden["wine"][0]["input"]]))
    req["inputs"][0]["data"][get_card("wine").features.index("ph")] = 15.0
    r = client.post("/v2/models/wine/infer", json=req)
    assert r.status_code == 400 and "feature ph" in r.get_json()["error"] and "14" in r.get_json()["error"]


def test_v2_digit_takes_28x28_or_flat_and_refuses_non_finite_floats_elsewhere(client, golden):
    rows = _rows("digit", [g["input"] for g in golden["digit"]])
    grid = _request("digit", rows)
    grid["inputs"][0]["shape"] = [len(rows), 28, 28]
    grid["inputs"][0]["data"] = rows.astype(int).reshape(-1, 28, 28).tolist()
    assert client.post("/v2/models/digit/infer", json=grid).status_code == 200
    body = b'{"inputs":[{"name":"input","datatype":"FP64","shape":[1,10],"data":[NaN,1,1,1,1,1,1,1,1,1]}]}'
    r = client.post("/v2/models/wine/infer", data=body, content_type="application/json")
    assert r.status_code == 400 and "finite" in r.get_json()["error"]


def test_v2_errors_never_become_problem_json_or_500(client):
    cases = [
        ("POST", "/v2/models/wine/infer", b"", 400),
        ("POST", "/v2/models/wine/infer", b"[1,2]", 400),
        ("POST", "/v2/models/wine/infer", b'{"inputs": "x"}', 400),
        ("GET", "/v2/models/nope", None, 404),
        ("DELETE", "/v2/models/wine", None, 405),
    ]
    for method, path, body, status in cases:
        r = client.open(path, method=method, data=body, content_type="application/json")
        assert r.status_code == status, (path, r.get_data(as_text=True))
        assert r.content_type == "application/json" and isinstance(r.get_json()["error"], str)
    r = client.post("/v2/models/wine/infer", data=b"{}", headers={"Inference-Header-Content-Length": "2"},
                    content_type="application/json")  # fmt: skip
    assert r.status_code == 400 and "inputs" in r.get_json()["error"]  # binary framing, then the usual checks


def test_v2_batch_limit_and_body_limit(make_app, artifacts, golden):
    client = make_app(
        ARTIFACTS_DIR=artifacts, MODELS=("wine",), MAX_BATCH=2, MAX_BODY_BYTES=4096
    ).test_client()
    rows = _rows("wine", [g["input"] for g in golden["wine"][:3]])
    r = client.post("/v2/models/wine/infer", json=_request("wine", rows))
    assert r.status_code == 400 and "DLQR_MAX_BATCH" in r.get_json()["error"]
    big = json.dumps(_request("wine", np.tile(rows, (50, 1)))).encode()
    r = client.post("/v2/models/wine/infer", data=big, content_type="application/json")
    assert r.status_code == 413 and "DLQR_MAX_BODY_BYTES" in r.get_json()["error"]


def test_v2_not_ready_is_503_with_an_error(make_app, artifacts_copy):
    (artifacts_copy / "wine" / "model.onnx").write_bytes(b"tampered")
    client = make_app(ARTIFACTS_DIR=artifacts_copy, MODELS=("wine",)).test_client()
    r = client.post("/v2/models/wine/infer", json={"inputs": []})
    assert r.status_code == 503 and "sha256 mismatch" in r.get_json()["error"]
    r = client.get("/v2/models/wine/ready")
    assert r.status_code == 503 and r.get_json()["ready"] is False
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/health/live").get_json() == {"live": True}
    md = client.get("/v2/models/wine").get_json()
    assert md["versions"] == [] and md["version_states"][0]["status"] == "failed"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v2/models/wine", "GET, HEAD, OPTIONS"),
        ("PUT", "/v2/models/wine/infer", "POST, OPTIONS"),
        ("GET", "/v2/models/wine/versions/1/infer", "POST, OPTIONS"),
        ("POST", "/v2/health/live", "GET, HEAD, OPTIONS"),
        ("POST", "/v2", "GET, HEAD, OPTIONS"),
        ("TRACE", "/v2/models/wine", "GET, HEAD, OPTIONS"),  # refused by routing, not by the catch-all
    ],
)
def test_v2_405_carries_allow_and_options_lists_only_what_works(client, method, path, allow):
    r = client.open(path, method=method)
    assert r.status_code == 405 and r.headers["Allow"] == allow, r.get_data(as_text=True)
    assert r.content_type == "application/json" and method in r.get_json()["error"]
    r = client.options(path)
    assert r.status_code == 204 and r.headers["Allow"] == allow
    for m in allow.split(", "):  # every advertised method is answered, none with 405
        if m != "OPTIONS":
            assert client.open(path, method=m, json={}).status_code != 405, m


def test_v2_options_on_an_unknown_path_is_404(client):
    r = client.options("/v2/nope")
    assert r.status_code == 404 and "no route" in r.get_json()["error"]


def test_openapi_lists_the_statuses_v2_routes_answer(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    for path, ops in paths.items():
        if path.startswith("/v2"):
            for op in ops.values():
                assert {"400", "404", "405", "413", "415", "503"} <= set(op["responses"]), path
    # and the server does answer them: 415 for a body with a byte-order mark, 413 over the limit
    r = client.post("/v2/models/wine/infer", data=b"\xef\xbb\xbf{}", content_type="application/json")
    assert r.status_code == 415 and "byte-order mark" in r.get_json()["error"]
