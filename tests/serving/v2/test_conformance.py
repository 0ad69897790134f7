"""Open Inference Protocol v2 (REST) conformance kit: every endpoint, every datatype the cards use,
and the error cases, over HTTP against a real server; tensors as JSON and as binary data (the
binary tensor data extension).

Runs against the real Gunicorn server by default, or any server:
``DLQR_V2_BASE_URL=http://127.0.0.1:8000 pytest tests/serving/v2/test_conformance.py``
(see ``conftest.py``). Every expected value comes from the model metadata the
server publishes, the cards, and the bundles' golden pairs.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import numpy as np
import pytest

from dlqr.card import names as card_names
from tests.serving.v2.conftest import Sample, Target

pytestmark = pytest.mark.integration
MODELS = card_names()
#: The numpy dtype each protocol datatype's data must fit.
NUMPY = {"BOOL": bool, "UINT8": np.uint8, "INT64": np.int64, "FP32": np.float32, "FP64": np.float64}


def call(target: Target, method: str, path: str, body: object = None, raw: bytes | None = None):
    """(status, parsed JSON body, content type) without raising on 4xx/5xx."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(target.base_url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, text, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, text, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    return status, (json.loads(text) if text else None), ctype


#: The binary tensor data extension (Triton's ``extension_binary_data.md``): little-endian numpy dtypes.
BINARY = {"BOOL": "|b1", "UINT8": "<u1", "INT64": "<i8", "FP32": "<f4", "FP64": "<f8"}
HEADER = "Inference-Header-Content-Length"


def call_binary(target: Target, path: str, head: dict, tail: bytes, header: str | None = "auto",
                content_type: str | None = "application/octet-stream"):  # fmt: skip
    """POST a JSON header plus tensor bytes: (status, JSON header, {output: raw bytes}, content type)."""
    raw_head = json.dumps(head).encode()
    req = urllib.request.Request(target.base_url + path, data=raw_head + tail, method="POST")
    if header is not None:
        req.add_header(HEADER, str(len(raw_head)) if header == "auto" else header)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, body, headers = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        status, body, headers = exc.code, exc.read(), exc.headers
    n = int(headers[HEADER]) if headers.get(HEADER) else len(body)
    parsed, offset, tensors = json.loads(body[:n]), n, {}
    for out in parsed.get("outputs", ()):
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            tensors[out["name"]] = body[offset : offset + size]
            offset += size
    assert offset == len(body), "response bytes beyond the declared binary outputs"
    return status, parsed, tensors, headers.get("Content-Type", "")


def metadata(target: Target, model: str) -> dict:
    status, body, _ = call(target, "GET", f"/v2/models/{model}")
    assert status == 200, body
    return body


def request_for(sample: Sample, md: dict, datatype: str | None = None, nested: bool = False, **extra) -> dict:
    """A valid inference request built from the published metadata and the golden inputs."""
    (inp,) = md["inputs"]
    dtype = datatype or inp["datatype"]
    n = len(sample.rows)
    shape = [n, *inp["shape"][1:]]
    rows = sample.rows.astype(np.int64) if dtype.startswith(("UINT", "INT")) else sample.rows
    data = rows.reshape(shape).tolist() if nested else rows.ravel().tolist()
    return {"inputs": [{"name": inp["name"], "datatype": dtype, "shape": shape, "data": data}], **extra}


def assert_error(status: int, body: dict, ctype: str, want_status: int, fragment: str) -> None:
    assert status == want_status, body
    assert ctype.startswith("application/json"), ctype
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert fragment in body["error"], body["error"]


# ------------------------------------------------------------------ server endpoints


def test_server_live_ready_and_metadata(v2_target):
    assert call(v2_target, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    status, body, _ = call(v2_target, "GET", "/v2/health/ready")
    assert status == 200 and body["ready"] is True
    status, body, _ = call(v2_target, "GET", "/v2")
    assert status == 200 and body["name"] and body["version"]
    assert isinstance(body["extensions"], list) and all(isinstance(e, str) for e in body["extensions"])


@pytest.mark.parametrize("model", MODELS)
def test_model_metadata_describes_tensors_from_the_card(v2_target, model):
    md = metadata(v2_target, model)
    sample = v2_target.samples[model]
    card = sample.card
    assert md["name"] == model and md["platform"] == "onnx_onnxv1"
    assert sample.version in md["versions"]
    (inp,) = md["inputs"]
    assert inp["name"] == card.input_name and inp["datatype"] == card.input_datatype
    assert inp["shape"][0] == -1 and math.prod(inp["shape"][1:]) == card.input_dim
    outputs = {o["name"]: o for o in md["outputs"]}
    assert outputs["raw_output"] == {"name": "raw_output", "datatype": "FP32", "shape": [-1, card.output_dim]}
    for t in card.task.tensor_outputs():
        assert outputs[t.name] == {"name": t.name, "datatype": t.datatype, "shape": [-1, *t.dims]}
    params = md["parameters"]
    assert params["version"] == sample.version and len(params["sha256"]) == 64
    assert params["features"].split(",") == list(card.features)
    assert all(isinstance(v, str | int | float | bool) for v in params.values())
    if "threshold" in sample.prep:
        assert params["threshold"] == sample.prep["threshold"]["value"]


@pytest.mark.parametrize("model", MODELS)
def test_model_and_version_ready(v2_target, model):
    version = v2_target.samples[model].version
    assert call(v2_target, "GET", f"/v2/models/{model}/ready")[:2] == (200, {"name": model, "ready": True})
    assert call(v2_target, "GET", f"/v2/models/{model}/versions/{version}/ready")[0] == 200
    status, body, _ = call(v2_target, "GET", f"/v2/models/{model}/versions/{version}")
    assert status == 200 and body["parameters"]["version"] == version


# ------------------------------------------------------------------------ inference


def check_outputs(
    sample: Sample, md: dict, body: dict, names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Each output has its declared datatype and shape; the post-processed ones equal the golden predictions."""
    n = len(sample.rows)
    declared = {o["name"]: o for o in md["outputs"]}
    got = {o["name"]: o for o in body["outputs"]}
    assert [o["name"] for o in body["outputs"]] == (names or [o["name"] for o in md["outputs"]])
    arrays = {}
    for name, out in got.items():
        assert out["datatype"] == declared[name]["datatype"]
        assert out["shape"] == [n, *declared[name]["shape"][1:]]
        arr = np.asarray(out["data"])
        assert arr.size == math.prod(out["shape"])
        if out["datatype"] == "BOOL":
            assert arr.dtype == bool
        elif out["datatype"].startswith("INT"):
            assert arr.dtype.kind == "i"
        else:
            assert arr.dtype.kind == "f" and np.isfinite(arr).all()
            assert np.array_equal(arr.astype(NUMPY[out["datatype"]]).astype(np.float64), arr)  # fits the type
        arrays[name] = arr.reshape(out["shape"])
    by_key = {t.key: t.name for t in sample.card.task.tensor_outputs()}
    for i, want in enumerate(sample.predictions):
        for key, name in by_key.items():
            if name in arrays:
                value = arrays[name][i]
                pred = dict(want)
                pred[key] = value.tolist()
                assert sample.card.task.compare(pred, want, sample.prep) is None, (name, value, want[key])
    return arrays


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_infer_returns_every_output_with_the_golden_predictions(v2_target, model, nested):
    sample, md = v2_target.samples[model], metadata(v2_target, model)
    status, body, _ = call(
        v2_target, "POST", f"/v2/models/{model}/infer", request_for(sample, md, nested=nested, id="req-7")
    )
    assert status == 200, body
    assert body["model_name"] == model and body["model_version"] == sample.version and body["id"] == "req-7"
    check_outputs(sample, md, body)


def binary_request(sample: Sample, md: dict, **extra) -> tuple[dict, bytes]:
    """The golden inputs as a binary tensor: JSON header without ``data``, then the bytes."""
    req = request_for(sample, md, **extra)
    inp = req["inputs"][0]
    raw = np.asarray(inp.pop("data")).astype(BINARY[inp["datatype"]]).tobytes()
    inp["parameters"] = {"binary_data_size": len(raw)}
    return req, raw


def test_server_announces_the_binary_tensor_data_extension(v2_target):
    assert "binary_tensor_data" in call(v2_target, "GET", "/v2")[1]["extensions"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("outputs", ["binary", "json"])
def test_binary_input_tensors_give_the_golden_predictions(v2_target, model, outputs):
    sample, md = v2_target.samples[model], metadata(v2_target, model)
    head, tail = binary_request(
        sample, md, id="bin-1", parameters={"binary_data_output": outputs == "binary"}
    )
    status, body, tensors, ctype = call_binary(v2_target, f"/v2/models/{model}/infer", head, tail)
    assert status == 200, body
    assert body["id"] == "bin-1" and body["model_version"] == sample.version
    if outputs == "binary":
        assert ctype.startswith("application/octet-stream") and set(tensors) == {
            o["name"] for o in md["outputs"]
        }
        for out in body["outputs"]:  # decode each as the protocol says, then check as JSON outputs
            raw = tensors[out["name"]]
            assert out["parameters"]["binary_data_size"] == len(raw) and "data" not in out
            out["data"] = np.frombuffer(raw, dtype=BINARY[out["datatype"]]).tolist()
    else:
        assert ctype.startswith("application/json") and not tensors
    check_outputs(sample, md, body)


@pytest.mark.parametrize("model", MODELS)
def test_binary_outputs_only_where_asked_per_output(v2_target, model):
    sample, md = v2_target.samples[model], metadata(v2_target, model)
    first, *rest = [o["name"] for o in md["outputs"]]
    wanted = [{"name": first, "parameters": {"binary_data": True}}, *({"name": n} for n in rest)]
    head = request_for(sample, md, outputs=wanted)
    status, body, tensors, _ = call_binary(v2_target, f"/v2/models/{model}/infer", head, b"",
                                           content_type="application/json")  # fmt: skip
    assert status == 200, body
    assert list(tensors) == [first]
    assert all("data" in o for o in body["outputs"] if o["name"] != first)


@pytest.mark.parametrize("content_type", [None, "application/json", "application/octet-stream"])
def test_binary_error_cases_are_400_with_an_error_string(v2_target, content_type):
    model = "digit" if "digit" in MODELS else MODELS[0]
    sample, md = v2_target.samples[model], metadata(v2_target, model)
    head, tail = binary_request(sample, md)
    inp = head["inputs"][0]
    url = f"/v2/models/{model}/infer"
    raw_len = len(json.dumps(head).encode())
    short = {"inputs": [{**inp, "parameters": {"binary_data_size": len(tail) - 1}}]}
    bare = {"inputs": [{k: v for k, v in inp.items() if k != "parameters"}]}
    # (JSON header, tensor bytes, Inference-Header-Content-Length: "auto" is the true one, None absent)
    cases = {
        "header length beyond the body": (head, tail, str(raw_len + len(tail) + 1), "only"),
        "negative header length": (head, tail, "-1", "non-negative integer"),
        "non-integer header length": (head, tail, "ten", "non-negative integer"),
        "size not matching the shape": (short, tail[:-1], "auto", "needs"),
        "size beyond the bytes sent": (head, tail[:-1], "auto", "follow the JSON header"),
        "bytes no input claims": (head, tail + b"\x00", "auto", "belong to no input"),
        "no size and no data": (bare, tail, "auto", "neither data"),
        "binary size without the header": (head, b"", None, "no Inference-Header-Content-Length"),
    }
    for what, (h, t, header, fragment) in cases.items():
        status, body, _, ctype = call_binary(v2_target, url, h, t, header=header, content_type=content_type)
        assert status == 400, (what, body)
        assert_error(status, body, ctype, 400, fragment)


@pytest.mark.parametrize("model", [m for m in MODELS if m != "digit"])
def test_float_models_accept_fp32_as_well_as_fp64(v2_target, model):
    sample, md = v2_target.samples[model], metadata(v2_target, model)
    req = request_for(sample, md, datatype="FP32")
    data = np.asarray(req["inputs"][0]["data"], dtype=np.float32).astype(np.float64)
    req["inputs"][0]["data"] = data.tolist()
    status, body, _ = call(v2_target, "POST", f"/v2/models/{model}/infer", req)
    assert status == 200, body
    assert [o["name"] for o in body["outputs"]] == [o["name"] for o in md["outputs"]]


@pytest.mark.parametrize("model", MODELS)
def test_requested_outputs_subset_in_request_order_and_the_version_path(v2_target, model):
    sample, md = v2_target.samples[model], metadata(v2_target, model)
    names = [o["name"] for o in md["outputs"]][::-1][:2]
    req = request_for(sample, md, outputs=[{"name": n} for n in names])
    status, body, _ = call(v2_target, "POST", f"/v2/models/{model}/versions/{sample.version}/infer", req)
    assert status == 200, body
    assert "id" not in body and body["model_version"] == sample.version
    check_outputs(sample, md, body, names)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("model", MODELS)
def test_error_cases_are_400_with_an_error_string(v2_target, model):
    sample, md = v2_target.samples[model], metadata(v2_target, model)
    url = f"/v2/models/{model}/infer"
    good = request_for(sample, md)
    inp = good["inputs"][0]

    def with_input(**changes):
        return {"inputs": [{**inp, **changes}]}

    n, d = len(sample.rows), sample.card.input_dim
    cases = {
        "wrong shape": (with_input(shape=[n, d + 1]), "shape"),
        "no batch dimension": (with_input(shape=[n * d]), "shape"),
        "data length mismatch": (with_input(data=inp["data"][:-1]), "elements"),
        "nested shape mismatch": (with_input(data=np.asarray(inp["data"]).reshape(d, n).tolist()), "shape"),
        "unknown datatype": (with_input(datatype="FP17"), "unknown datatype"),
        "wrong datatype": (with_input(datatype="BYTES"), "not accepted"),
        "unknown output name": ({**good, "outputs": [{"name": "no_such_output"}]}, "unknown output"),
        "unknown input name": (with_input(name="no_such_input"), "unknown input"),
        "boolean data": (with_input(data=[True] * (n * d)), "not a number"),
        "string data": (with_input(data=["1"] * (n * d)), "not a number"),
        "no inputs": ({"inputs": []}, "inputs"),
        # beyond the card's schema bounds (for an integer type, beyond the type's range first)
        "value out of bounds": (
            with_input(data=[10**7] * (n * d)),
            "out of range" if inp["datatype"] == "UINT8" else "instance 0",
        ),
        "batch of zero": (with_input(shape=[0, d], data=[]), "batch size"),
    }
    for what, (req, fragment) in cases.items():
        status, body, ctype = call(v2_target, "POST", url, req)
        assert status == 400, (what, body)
        assert_error(status, body, ctype, 400, fragment)
    assert_error(*call(v2_target, "POST", url, raw=b'{"inputs": [}'), 400, "not valid JSON")


def test_integer_input_types_refuse_fractions_and_out_of_range_values(v2_target):
    ints = [m for m in MODELS if v2_target.samples[m].card.input_datatype.startswith(("UINT", "INT"))]
    if not ints:
        pytest.skip("no card declares an integer input")
    for model in ints:
        sample, md = v2_target.samples[model], metadata(v2_target, model)
        req = request_for(sample, md)
        data = req["inputs"][0]["data"]
        frac = {"inputs": [{**req["inputs"][0], "data": [0.5, *data[1:]]}]}
        assert_error(*call(v2_target, "POST", f"/v2/models/{model}/infer", frac), 400, "must be integers")
        big = {"inputs": [{**req["inputs"][0], "data": [256, *data[1:]]}]}
        assert_error(*call(v2_target, "POST", f"/v2/models/{model}/infer", big), 400, "out of range")


def test_unknown_model_version_and_route_are_404_and_wrong_method_405(v2_target):
    model = MODELS[0]
    for path in ("/v2/models/no_such_model", "/v2/models/no_such_model/ready", f"/v2/models/{model}/versions/0.0.0",
                 f"/v2/models/{model}/versions/0.0.0/ready", "/v2/no/such/route"):  # fmt: skip
        assert_error(*call(v2_target, "GET", path), 404, "")
    for path in ("/v2/models/no_such_model/infer", f"/v2/models/{model}/versions/0.0.0/infer"):
        assert_error(*call(v2_target, "POST", path, {"inputs": []}), 404, "")
    assert_error(*call(v2_target, "GET", f"/v2/models/{model}/infer"), 405, "POST")
