"""The Flask app on tiny bundles: every endpoint, every error class, headers, logs, metrics."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest

from dlqr import card as cards
from serving.errors import PROBLEM_CONTENT_TYPE
from tests.serving import bundles
from tests.serving.bundles import MODEL_NAMES


def assert_problem(resp, status: int, slug: str) -> dict:
    assert resp.status_code == status, resp.data
    assert resp.content_type == PROBLEM_CONTENT_TYPE
    body = resp.get_json(force=True)
    assert body["status"] == status and body["type"] == f"/docs#problem-{slug}"
    assert body["title"] and body["detail"]
    assert body["request_id"] == resp.headers["X-Request-ID"]
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    return body


def post_json(client, path, body, **kw):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data=data, content_type=kw.pop("content_type", "application/json"), **kw)


# ------------------------------------------------------------------- health


def test_healthz_and_readyz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "ready"
    assert {n: m["status"] for n, m in body["models"].items()} == dict.fromkeys(MODEL_NAMES, "ready")


def test_not_ready_while_loading(make_app, artifacts):
    app = make_app(ARTIFACTS_DIR=artifacts, MODEL_LOADING="none")  # nothing loaded yet
    c = app.test_client()
    assert c.get("/healthz").status_code == 200  # alive while loading
    body = assert_problem(c.get("/readyz"), 503, "not-ready")
    assert "pending" in body["detail"] and body["models"]["wine"]["status"] == "pending"
    instance = bundles.api_instance("wine", bundles.sample_rows("wine", 1)[0], bundles.preprocessing("wine"))
    r = post_json(c, "/predict/wine", instance)
    assert_problem(r, 503, "not-ready")
    assert r.headers["Retry-After"] == "5"
    app.extensions["dlqr"].registry.load_all()
    assert c.get("/readyz").status_code == 200
    assert c.post("/predict/wine", json=instance).status_code == 200


def test_tampered_bundle_makes_only_that_model_unready(make_app, artifacts_copy):
    data = bytearray((artifacts_copy / "digit" / "model.h5").read_bytes())
    data[-50] ^= 1
    (artifacts_copy / "digit" / "model.h5").write_bytes(bytes(data))
    c = make_app(ARTIFACTS_DIR=artifacts_copy).test_client()
    body = assert_problem(c.get("/readyz"), 503, "not-ready")
    assert "digit: failed" in body["detail"] and "sha256 mismatch for model.h5" in body["detail"]
    assert "Retry-After" not in c.get("/readyz").headers  # a failed bundle won't fix itself
    r = post_json(c, "/predict/digit", {"pixels": [0] * 784})
    assert "sha256 mismatch" in assert_problem(r, 503, "not-ready")["detail"]
    assert post_json(c, "/predict/seizure", {"eeg": [0] * 178}).status_code == 200
    models = {m["name"]: m for m in c.get("/models").get_json()["models"]}
    assert models["digit"]["ready"] is False and "sha256" in models["digit"]["reason"]


def _tamper_onnx(root):
    data = bytearray((root / "digit" / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / "digit" / "model.onnx").write_bytes(bytes(data))


def _drop_onnx(root):
    # A bundle sealed without model.onnx (e.g. trained where ONNX export was impossible).
    bundles.reseal(root / "digit", lambda d: (d / "model.onnx").unlink())


def _foreign_onnx(root):
    # Hashes valid, but model.onnx is another network's: the golden pairs must catch it.
    other = bundles.write_bundle(root.parent / "other" / "digit", "digit", seed=99)
    bundles.reseal(
        root / "digit", lambda d: (d / "model.onnx").write_bytes((other / "model.onnx").read_bytes())
    )


@pytest.mark.parametrize(
    ("spoil", "fragment"),
    [
        (_tamper_onnx, "sha256 mismatch for model.onnx"),
        (_drop_onnx, "python -m training add-onnx"),
        (_foreign_onnx, "golden pair 0 mismatch on ONNX Runtime"),
    ],
    ids=["tampered-onnx", "missing-onnx", "foreign-onnx"],
)
def test_onnx_problems_make_only_that_model_unready(make_app, artifacts_copy, golden, spoil, fragment):
    spoil(artifacts_copy)
    c = make_app(ARTIFACTS_DIR=artifacts_copy).test_client()
    body = assert_problem(c.get("/readyz"), 503, "not-ready")
    assert body["models"]["digit"]["status"] == "failed" and fragment in body["detail"]
    assert "Retry-After" not in c.get("/readyz").headers
    assert (
        fragment
        in assert_problem(post_json(c, "/predict/digit", {"pixels": [0] * 784}), 503, "not-ready")["detail"]
    )
    for name in ("wine", "seizure"):  # the others keep serving
        assert body["models"][name]["status"] == "ready"
        assert post_json(c, f"/predict/{name}", golden[name][0]["input"]).status_code == 200
    detail = c.get("/models/digit").get_json()
    assert detail["ready"] is False and fragment in detail["reason"] and "runtime" not in detail


# ------------------------------------------------------------------ predict


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_golden_inputs_reproduce_golden_predictions(client, golden, name):
    pairs = golden[name]
    r = post_json(client, f"/predict/{name}", {"instances": [p["input"] for p in pairs]})
    assert r.status_code == 200 and r.content_type == "application/json"
    body = r.get_json()
    assert body["model"] == name and body["version"] == "2026.01.01.000000"
    assert len(body["predictions"]) == len(pairs)
    for got, pair in zip(body["predictions"], pairs, strict=True):  # request order kept
        want = pair["prediction"]
        assert set(got) == set(want)
        for key, value in want.items():
            if isinstance(value, list):
                assert got[key] == pytest.approx(value, abs=1e-5)
            elif isinstance(value, bool | int) and not isinstance(value, float):
                assert got[key] == value
            else:
                assert got[key] == pytest.approx(value, abs=1e-4)
    single = post_json(client, f"/predict/{name}", pairs[0]["input"]).get_json()["predictions"][0]
    first = body["predictions"][0]
    assert set(single) == set(first)
    for key in single:
        assert single[key] == (
            pytest.approx(first[key], abs=1e-6) if not isinstance(first[key], bool) else first[key]
        )


def test_prediction_shapes(client, golden):
    wine = post_json(client, "/predict/wine", golden["wine"][0]["input"]).get_json()["predictions"][0]
    assert set(wine) == {"alcohol"} and isinstance(wine["alcohol"], float)
    sz = post_json(client, "/predict/seizure", golden["seizure"][0]["input"]).get_json()["predictions"][0]
    assert set(sz) == {"probability", "seizure", "threshold"} and sz["threshold"] == 0.5
    assert sz["seizure"] == (sz["probability"] >= 0.5)
    d = post_json(client, "/predict/digit", golden["digit"][0]["input"]).get_json()["predictions"][0]
    assert set(d) == {"digit", "confidence", "probabilities"} and len(d["probabilities"]) == 10
    assert d["digit"] == int(np.argmax(d["probabilities"])) and d["confidence"] == max(d["probabilities"])
    assert sum(d["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def _png_of(pixels: np.ndarray, invert: bool = False, scale: int = 4) -> bytes:
    from PIL import Image

    img = Image.fromarray((255 - pixels if invert else pixels).astype(np.uint8)).resize(
        (28 * scale, 28 * scale)
    )
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_digit_accepts_nested_pixels_base64_images_and_raw_png(client):
    rng = np.random.default_rng(4)
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 11:17] = rng.integers(200, 256, size=(20, 6))
    flat = post_json(client, "/predict/digit", {"pixels": digit.reshape(-1).tolist()}).get_json()
    nested = post_json(client, "/predict/digit", {"pixels": digit.tolist()}).get_json()
    assert flat == nested
    png = _png_of(digit, invert=True)
    as_json = post_json(client, "/predict/digit", {"image": base64.b64encode(png).decode()})
    raw = client.post("/predict/digit", data=png, content_type="image/png")
    assert as_json.status_code == raw.status_code == 200
    assert as_json.get_json()["predictions"] == raw.get_json()["predictions"]
    jpeg = io.BytesIO()
    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").save(jpeg, "JPEG")
    assert client.post("/predict/digit", data=jpeg.getvalue(), content_type="image/jpeg").status_code == 200


def test_batch_order_is_kept(client):
    rows = bundles.sample_rows("seizure", 6, seed=11)
    prep = bundles.preprocessing("seizure")
    insts = [bundles.api_instance("seizure", r, prep) for r in rows]
    batch = post_json(client, "/predict/seizure", {"instances": insts}).get_json()["predictions"]
    singles = [post_json(client, "/predict/seizure", i).get_json()["predictions"][0] for i in insts]
    assert [p["probability"] for p in batch] == pytest.approx([p["probability"] for p in singles], abs=1e-6)


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize("body", [b"{", b'{"eeg": [1,2,]}', b"\xff\xfd{", b"{'eeg': []}", b"[" * 100_000])
def test_malformed_json_is_400(client, body):
    assert_problem(post_json(client, "/predict/seizure", body), 400, "malformed-json")


def test_empty_body_is_400(client):
    assert_problem(post_json(client, "/predict/wine", b""), 400, "bad-request")


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "image/png", ""]
)
def test_unsupported_content_type_is_415(client, ctype):
    body = assert_problem(
        client.post("/predict/wine", data=b"{}", content_type=ctype or None), 415, "unsupported-media-type"
    )
    assert "application/json" in body["detail"]


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "application/vnd.dlqr+json"])
def test_json_content_type_variants_are_accepted(client, golden, ctype):
    r = client.post("/predict/wine", data=json.dumps(golden["wine"][0]["input"]), content_type=ctype)
    assert r.status_code == 200


def test_unknown_model_and_route_are_404(client):
    body = assert_problem(post_json(client, "/predict/beer", {}), 404, "unknown-model")
    assert "wine" in body["detail"]
    assert_problem(client.get("/models/beer"), 404, "unknown-model")
    assert_problem(client.get("/no/such/route"), 404, "not-found")


def test_wrong_method_is_405_with_allow(client):
    r = client.get("/predict/wine")
    assert_problem(r, 405, "method-not-allowed")
    assert "POST" in r.headers["Allow"]
    assert_problem(client.delete("/models"), 405, "method-not-allowed")


def test_body_and_batch_limits_are_413(make_app, artifacts, golden):
    c = make_app(ARTIFACTS_DIR=artifacts, MAX_BATCH=4, MAX_BODY_BYTES=20_000).test_client()
    inst = golden["digit"][0]["input"]
    body = assert_problem(
        post_json(c, "/predict/wine", {"instances": [golden["wine"][0]["input"]] * 5}), 413, "batch-too-large"
    )
    assert "5" in body["detail"] and "4" in body["detail"]
    assert post_json(c, "/predict/wine", {"instances": [golden["wine"][0]["input"]] * 4}).status_code == 200
    big = assert_problem(
        post_json(c, "/predict/digit", {"instances": [inst] * 4, "pad": "x" * 20_000}),
        413,
        "payload-too-large",
    )
    assert "20,000" in big["detail"]


def test_validation_errors_are_422_with_locations(client, golden):
    inst = dict(golden["wine"][0]["input"])
    bad = {"instances": [inst, inst, inst, {**inst, "ph": 15}]}
    body = assert_problem(post_json(client, "/predict/wine", bad), 422, "validation-error")
    assert body["errors"] == [
        {
            "loc": ["instances", 3, "ph"],
            "msg": "Input should be less than or equal to 14",
            "type": "less_than_equal",
        }
    ]
    assert body["detail"].startswith("instances/3/ph:")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_422(client, golden, token):
    text = json.dumps(golden["wine"][0]["input"])
    text = re.sub(r'"density": [0-9.e-]+', f'"density": {token}', text)
    body = assert_problem(post_json(client, "/predict/wine", text), 422, "validation-error")
    assert body["errors"][0]["loc"] == ["density"]


def test_bad_image_is_422(client):
    body = assert_problem(
        client.post("/predict/digit", data=b"\x89PNG\r\n\x1a\nnope", content_type="image/png"),
        422,
        "validation-error",
    )
    assert body["errors"][0]["loc"] == ["body"]
    body = assert_problem(post_json(client, "/predict/digit", {"image": "!!"}), 422, "validation-error")
    assert body["errors"][0]["loc"] == ["image"]


def test_unexpected_error_is_a_bare_500(make_app, artifacts, golden, capsys):
    app = make_app(ARTIFACTS_DIR=artifacts, MODELS=("wine",))

    def boom(x):
        raise RuntimeError("secret internal detail")

    app.extensions["dlqr"].registry.states["wine"].model.forward = boom
    r = post_json(app.test_client(), "/predict/wine", golden["wine"][0]["input"])
    body = assert_problem(r, 500, "internal-error")
    assert "secret" not in r.get_data(as_text=True) and body["request_id"] in body["detail"]
    err = capsys.readouterr().err
    assert "secret internal detail" in err  # the traceback goes to the log, not the client


# ------------------------------------------------------------ request ids, logs


def test_request_id_is_echoed_or_generated(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    gen = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", gen)
    for hostile in ("a b", "x" * 200, "id;<script>", "ü"):
        rid = client.get("/healthz", headers={"X-Request-ID": hostile}).headers["X-Request-ID"]
        assert rid != hostile and re.fullmatch(r"[0-9a-f]{32}", rid)
    assert client.get("/nope", headers={"X-Request-ID": "err-1"}).headers["X-Request-ID"] == "err-1"
    assert client.get("/predict/wine", headers={"X-Request-ID": "err-2"}).headers["X-Request-ID"] == "err-2"


def test_one_json_log_line_per_request(client, golden, capsys):
    capsys.readouterr()
    post_json(
        client,
        "/predict/wine",
        {"instances": [golden["wine"][0]["input"]] * 3},
        headers={"X-Request-ID": "log-test-1"},
    )
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    mine = [x for x in lines if x.get("request_id") == "log-test-1"]
    assert len(mine) == 1
    rec = mine[0]
    assert rec["event"] == "request" and rec["model"] == "wine" and rec["status"] == 200
    assert rec["batch_size"] == 3 and rec["latency_ms"] > 0 and rec["method"] == "POST"
    assert rec["level"] == "INFO" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["ts"])


# ------------------------------------------------------------------- models


def test_models_list_and_detail(client, artifacts):
    models = {m["name"]: m for m in client.get("/models").get_json()["models"]}
    assert set(models) == set(MODEL_NAMES)
    manifest = json.loads((artifacts / "seizure" / "manifest.json").read_text())
    sz = models["seizure"]
    assert sz["version"] == manifest["version"] and sz["bundle_sha256"] == manifest["files"]
    assert sz["model_sha256"] == manifest["files"]["model.h5"]
    assert sz["threshold"]["value"] == 0.5 and sz["test_metrics"]["roc_auc"] == 0.9
    assert "confusion_matrix" not in sz["test_metrics"]
    assert sz["onnx_sha256"] == manifest["files"]["model.onnx"]
    assert [models[n]["endpoint"] for n in MODEL_NAMES] == [f"/predict/{n}" for n in MODEL_NAMES]
    assert {n: m["title"] for n, m in models.items()} == {n: cards.get(n).title for n in MODEL_NAMES}
    assert {n: m["task"] for n, m in models.items()} == {
        "wine": "regression",
        "seizure": "binary",
        "digit": "multiclass",
    }
    detail = client.get("/models/wine").get_json()
    assert (
        detail["title"] == cards.get("wine").title and detail["description"] == cards.get("wine").description
    )
    assert detail["media_types"] == ["application/json"]
    assert detail["input_schema"]["properties"]["ph"]["maximum"] == 14
    assert "alcohol" in detail["output"]["schema"]["properties"] and detail["output"]["description"]
    assert detail["metrics"]["test"]["mae"] == 0.5 and detail["units"] == "% vol"
    assert detail["selftest"]["golden_pairs"] == 4 and detail["max_batch"] == 256
    assert "layers" not in detail  # the NumPy fast path is gone: ONNX Runtime runs the network
    runtime = detail["runtime"]
    assert runtime["runtime"] == "onnxruntime"
    assert runtime["input"]["shape"][-1] == 10 and runtime["output"]["shape"][-1] == 1
    digit = client.get("/models/digit").get_json()
    assert digit["media_types"] == ["application/json", "image/png", "image/jpeg"]
    assert digit["runtime"]["input"]["shape"][-1] == 784 and digit["runtime"]["output"]["shape"][-1] == 10
    assert digit["class_labels"] == [str(d) for d in range(10)]


# ------------------------------------------------------------------ metrics


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"{name}{labels} not in metrics"
    return total


def test_metrics_count_requests_predictions_and_drift(make_app, artifacts, golden):
    app = make_app(ARTIFACTS_DIR=artifacts)
    c = app.test_client()
    wine = golden["wine"][0]["input"]
    post_json(c, "/predict/wine", {"instances": [wine, {**wine, "residual_sugar": 500.0}]})
    post_json(c, "/predict/wine", {**wine, "ph": 99})
    sz = post_json(c, "/predict/seizure", {"instances": [g["input"] for g in golden["seizure"]]}).get_json()
    post_json(c, "/predict/digit", {"pixels": [0] * 784})
    c.get("/nope")
    text = c.get("/metrics").get_data(as_text=True)
    assert (
        _metric(text, "dlqr_http_requests_total", endpoint="/predict/wine", method="POST", status="200") == 1
    )
    assert (
        _metric(text, "dlqr_http_requests_total", endpoint="/predict/wine", method="POST", status="422") == 1
    )
    assert _metric(text, "dlqr_http_requests_total", endpoint="unmatched", method="GET", status="404") == 1
    assert _metric(text, "dlqr_http_request_duration_seconds_count", model="wine") == 2
    assert _metric(text, "dlqr_http_request_duration_seconds_bucket", model="wine", le="+Inf") == 2
    assert _metric(text, "dlqr_model_batch_size_sum", model="wine") == 2  # only the served request
    assert _metric(text, "dlqr_model_inference_seconds_count", model="seizure") == 1
    pos = sum(p["seizure"] for p in sz["predictions"])
    assert (
        _metric(text, "dlqr_model_predictions_total", model="seizure", outcome="positive") == pos or pos == 0
    )
    assert _metric(text, "dlqr_model_predictions_total", model="seizure") == len(sz["predictions"])
    assert _metric(text, "dlqr_model_predictions_total", model="wine", outcome="value") == 2
    assert _metric(text, "dlqr_model_predictions_total", model="digit") == 1
    assert _metric(text, "dlqr_model_predicted_value_count", model="wine") == 2
    assert _metric(text, "dlqr_model_predicted_probability_count", model="seizure") == 4
    assert _metric(text, "dlqr_input_out_of_range_total", model="wine", feature="residual_sugar") == 1
    # every ranged feature's series exists from the start at 0; a refused input is not counted
    assert _metric(text, "dlqr_input_out_of_range_total", model="wine", feature="ph") == 0
    assert 'dlqr_input_out_of_range_total{feature="ph",model="wine"} 0.0' in text
    manifest = json.loads((artifacts / "digit" / "manifest.json").read_text())
    assert (
        _metric(
            text,
            "dlqr_model_info",
            model="digit",
            version=manifest["version"],
            sha256=manifest["files"]["model.onnx"],  # the file ONNX Runtime serves
        )
        == 1
    )
    assert _metric(text, "dlqr_model_ready", model="digit") == 1
    assert 'le="0.0005"' in text and 'le="5.0"' in text  # latency buckets 0.5 ms .. 5 s
    assert "_created" not in text


def test_endpoint_label_is_the_matched_url_rule(make_app, artifacts, golden):
    c = make_app(ARTIFACTS_DIR=artifacts).test_client()
    post_json(c, "/predict/digit", golden["digit"][0]["input"])
    post_json(c, "/predict/beer", {})  # unknown model: the generic rule, not the raw path
    post_json(c, "/predict/lager", {})
    c.get("/predict/wine")  # 405: labelled with the rule the path matched
    c.get("/models/seizure")
    c.get("/models/stout")
    c.get("/random/path/123")
    text = c.get("/metrics").get_data(as_text=True)
    assert (
        _metric(text, "dlqr_http_requests_total", endpoint="/predict/digit", method="POST", status="200") == 1
    )
    assert (
        _metric(text, "dlqr_http_requests_total", endpoint="/predict/<name>", method="POST", status="404")
        == 2
    )
    assert (
        _metric(text, "dlqr_http_requests_total", endpoint="/predict/wine", method="GET", status="405") == 1
    )
    assert (
        _metric(text, "dlqr_http_requests_total", endpoint="/models/seizure", method="GET", status="200") == 1
    )
    assert (
        _metric(text, "dlqr_http_requests_total", endpoint="/models/<name>", method="GET", status="404") == 1
    )
    assert _metric(text, "dlqr_http_requests_total", endpoint="unmatched", method="GET", status="404") == 1
    for raw in ("beer", "lager", "stout", "random"):
        assert raw not in text  # random paths never create series


def test_model_ready_is_zero_for_a_failed_model(make_app, artifacts_copy):
    (artifacts_copy / "wine" / "metrics.json").write_text("{}")
    text = make_app(ARTIFACTS_DIR=artifacts_copy).test_client().get("/metrics").get_data(as_text=True)
    assert (
        _metric(text, "dlqr_model_ready", model="wine") == 0
        and _metric(text, "dlqr_model_ready", model="seizure") == 1
    )


# ------------------------------------------------------------- openapi, docs


def test_openapi_document(client, golden):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    for path in [
        "/predict/wine",
        "/predict/seizure",
        "/predict/digit",
        "/models",
        "/models/{name}",
        "/healthz",
        "/readyz",
        "/metrics",
    ]:
        assert path in spec["paths"]
    text = json.dumps(spec)
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert ref in spec["components"]["schemas"], ref
    assert "image/png" in spec["paths"]["/predict/digit"]["post"]["requestBody"]["content"]
    jsonschema = pytest.importorskip("jsonschema")
    for name in MODEL_NAMES:
        schema = dict(
            spec["paths"][f"/predict/{name}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        )
        schema["components"] = spec["components"]
        schema = json.loads(json.dumps(schema).replace("#/components/", "#/components/"))
        jsonschema.validate(golden[name][0]["input"], schema)
        jsonschema.validate({"instances": [g["input"] for g in golden[name]]}, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"instances": []}, schema)


def test_docs_page_is_self_contained(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.content_type.startswith("text/html")
    html = r.get_data(as_text=True)
    assert "/predict/digit" in html and 'id="problem-validation-error"' in html
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html), "docs must not load anything external"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_openapi_lists_every_status_the_server_answers(client):
    """408, 413 (pixels), 414, 431, 503 (overload, drain), 504 come from the guard and the
    worker, not from the views: the document lists them too, each linked to its /docs anchor."""
    from serving.errors import PROBLEM_TYPES, problem_statuses

    statuses = problem_statuses()
    assert {400, 404, 405, 408, 413, 414, 415, 422, 431, 500, 503, 504} <= set(statuses)
    for slug in PROBLEM_TYPES:  # each text states its status (the table's contract)
        assert slug == "http-error" or any(slug in slugs for slugs in statuses.values()), slug
    spec = client.get("/openapi.json").get_json()
    html = client.get("/docs").get_data(as_text=True)
    for name in MODEL_NAMES:
        responses = spec["paths"][f"/predict/{name}"]["post"]["responses"]
        assert {str(s) for s in statuses} <= set(responses), name
        for status, slugs in statuses.items():
            for slug in slugs:
                assert f"/docs#problem-{slug}" in responses[str(status)]["description"]
                assert f'id="problem-{slug}"' in html


def test_request_duration_covers_every_route_and_values_are_split_by_kind(make_app, artifacts):
    c = make_app(ARTIFACTS_DIR=artifacts).test_client()
    c.get("/healthz")
    c.get("/models")
    c.get("/v2/health/live")
    text = c.get("/metrics").get_data(as_text=True)
    for endpoint in ("/healthz", "/models", "/v2/health/live"):
        n = _metric(
            text, "dlqr_http_request_duration_seconds_count", endpoint=endpoint, method="GET", model=""
        )
        assert n == 1, endpoint
    # probabilities and values in a model's units (% vol) never share a histogram
    assert "# TYPE dlqr_model_predicted_probability histogram" in text
    assert "# TYPE dlqr_model_predicted_value histogram" in text
    assert 'dlqr_model_predicted_value_bucket{le="0.5",model="wine"}' not in text  # % vol buckets only
    assert 'dlqr_model_predicted_probability_bucket{le="8.0",model="seizure"}' not in text
    # metric names carry the application prefix
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names and all(n.startswith("dlqr_") for n in names), names
