"""Binary tensor data over HTTP, in process: through the guard and the V2 routes, with the bodies the
official client builds (``tritonclient``'s own request builder and response parser) and hostile ones.

Every refusal is the protocol's ``{"error": ...}`` JSON body with a 4xx, never a 500.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from dlqr.card import get as get_card
from serving import v2_binary
from tests.serving.test_v2 import MODELS, _request, _rows

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the dev extra")
Client = httpclient.InferenceServerClient
NUMPY = {"UINT8": np.uint8, "FP32": np.float32, "FP64": np.float64}
HEADER = v2_binary.HEADER


def _triton_body(name, rows, datatype=None, outputs=None, **kw):
    """The request body and header length tritonclient sends with its default settings."""
    card = get_card(name)
    datatype = datatype or card.input_datatype
    inp = httpclient.InferInput(card.input_name, list(rows.shape), datatype)
    inp.set_data_from_numpy(rows.astype(NUMPY[datatype]))  # default: binary_data=True
    return Client.generate_request_body([inp], outputs=outputs, **kw)


def _post(client, name, body, json_size, content_type=None, path=None):
    headers = {HEADER: str(json_size)} if json_size is not None else {}
    return client.post(
        path or f"/v2/models/{name}/infer", data=body, headers=headers, content_type=content_type
    )


def _result(resp):
    return Client.parse_response_body(resp.get_data(), header_length=resp.headers.get(HEADER))


def _assert_error(resp, status, fragment):
    assert resp.status_code == status, resp.get_data()[:300]
    assert resp.content_type == "application/json" and HEADER not in resp.headers
    assert fragment in resp.get_json()["error"], resp.get_json()["error"]


def test_server_metadata_announces_the_extension(client):
    assert "binary_tensor_data" in client.get("/v2").get_json()["extensions"]


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_default_bodies_answer_as_predict_does(client, golden, name):
    instances = [g["input"] for g in golden[name]]
    preds = client.post(f"/predict/{name}", json={"instances": instances}).get_json()["predictions"]
    rows = _rows(name, instances)
    as_json = client.post(f"/v2/models/{name}/infer", json=_request(name, rows)).get_json()
    body, json_size = _triton_body(name, rows, request_id="b1")
    assert json_size is not None and json_size < len(body)  # really a binary request
    resp = _post(client, name, body, json_size)
    assert resp.status_code == 200, resp.get_data()[:300]
    assert resp.content_type == "application/octet-stream" and int(resp.headers[HEADER]) < len(
        resp.get_data()
    )
    result = _result(resp)
    head = result.get_response()
    assert head["id"] == "b1" and head["model_name"] == name
    for out in head["outputs"]:  # every output binary: the client asked binary_data_output
        assert set(out["parameters"]) == {"binary_data_size"} and "data" not in out
    by_name = {o["name"]: o for o in as_json["outputs"]}
    for t in get_card(name).task.tensor_outputs():
        got = result.as_numpy(t.name)
        assert got.tolist() == np.asarray(by_name[t.name]["data"]).reshape(by_name[t.name]["shape"]).tolist()
        assert got.tolist() == [p[t.key] for p in preds], t.name
    raw = result.as_numpy("raw_output")
    assert raw.dtype == np.float32 and raw.shape == (len(rows), get_card(name).output_dim)
    np.testing.assert_array_equal(raw.ravel(), np.asarray(by_name["raw_output"]["data"], dtype=np.float32))


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "application/json"])
def test_a_binary_body_passes_the_guard_whatever_its_content_type(client, golden, content_type):
    rows = _rows("wine", [golden["wine"][0]["input"]])
    body, json_size = _triton_body("wine", rows)
    resp = _post(client, "wine", body, json_size, content_type=content_type)
    assert resp.status_code == 200, resp.get_data()[:300]


def test_outputs_are_binary_only_where_asked(client, golden):
    rows = _rows("seizure", [g["input"] for g in golden["seizure"][:3]])
    outputs = [
        httpclient.InferRequestedOutput("probability", binary_data=True),
        httpclient.InferRequestedOutput("seizure", binary_data=False),
    ]
    body, json_size = _triton_body("seizure", rows, outputs=outputs)
    result = _result(_post(client, "seizure", body, json_size))
    outs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert list(outs) == ["probability", "seizure"]
    assert outs["probability"]["parameters"] == {"binary_data_size": 12} and "data" not in outs["probability"]
    assert isinstance(outs["seizure"]["data"], list) and "parameters" not in outs["seizure"]
    assert result.as_numpy("seizure").dtype == bool


def test_json_inputs_can_ask_for_binary_outputs_and_binary_inputs_for_json_outputs(client, golden):
    rows = _rows("wine", [golden["wine"][0]["input"]])
    req = _request("wine", rows, parameters={"binary_data_output": True})
    resp = client.post("/v2/models/wine/infer", json=req)
    assert resp.status_code == 200 and HEADER in resp.headers
    assert _result(resp).as_numpy("alcohol").shape == (1,)
    outputs = [httpclient.InferRequestedOutput("alcohol", binary_data=False)]
    body, json_size = _triton_body("wine", rows, outputs=outputs)
    resp = _post(client, "wine", body, json_size)
    assert resp.status_code == 200 and resp.content_type == "application/json" and HEADER not in resp.headers
    assert resp.get_json()["outputs"][0]["data"] == [pytest.approx(_result(resp).as_numpy("alcohol")[0])]


def test_fp32_binary_is_accepted_where_the_card_takes_floats(client, golden):
    rows = _rows("wine", [g["input"] for g in golden["wine"]])
    body, json_size = _triton_body("wine", rows, datatype="FP32")
    assert _post(client, "wine", body, json_size).status_code == 200


def _hand_body(head: dict, tail: bytes) -> tuple[bytes, int]:
    raw = json.dumps(head).encode()
    return raw + tail, len(raw)


def _digit_input(size: int, datatype: str = "UINT8", shape=(1, 784)) -> dict:
    return {"inputs": [{"name": get_card("digit").input_name, "datatype": datatype, "shape": list(shape),
                        "parameters": {"binary_data_size": size}}]}  # fmt: skip


def test_hostile_binary_requests_get_a_400_with_the_reason(client):
    pixels = bytes(784)
    ok_body, ok_len = _hand_body(_digit_input(784), pixels)
    assert _post(client, "digit", ok_body, ok_len).status_code == 200
    strings = struct.pack("<I", 1) + b"x"
    cases = {
        "header longer than the body": (ok_body, len(ok_body) + 1, "only"),
        "negative header length": (ok_body, "-5", "non-negative integer"),
        "non-integer header length": (ok_body, "12.5", "non-negative integer"),
        "empty header length": (ok_body, "", "non-negative integer"),
        "size does not match datatype x shape": (*_hand_body(_digit_input(783), bytes(783)), "needs 784"),
        "size larger than what follows": (*_hand_body(_digit_input(784), bytes(700)), "only 700 follow"),
        "a huge declared size": (*_hand_body(_digit_input(2**62), pixels), "4,611,686,018,427,387,904"),
        "bytes left over": (*_hand_body(_digit_input(784), pixels + b"\x00"), "belong to no input"),
        "neither data nor size": (
            *_hand_body({"inputs": [{**_digit_input(0)["inputs"][0], "parameters": {}}]}, pixels),
            "neither data",
        ),  # fmt: skip
        "a BYTES tensor": (
            *_hand_body(_digit_input(len(strings), "BYTES", (1,)), strings),
            "BYTES is not accepted",
        ),
        "a wrong datatype that decodes": (
            *_hand_body(_digit_input(784 * 4, "FP32"), bytes(784 * 4)),
            "not accepted",
        ),
        "an unknown datatype": (*_hand_body(_digit_input(784, "FP8"), pixels), "unknown datatype"),
        "a non-boolean binary flag": (
            *_hand_body({**_digit_input(784), "parameters": {"binary_data_output": "yes"}}, pixels),
            "true or false",
        ),
        "trailing bytes with no header length": (ok_body, None, "not valid JSON"),
        "a header length inside the JSON": (ok_body, str(ok_len - 3), "not valid JSON"),
    }
    for what, (body, json_size, fragment) in cases.items():
        for content_type in (None, "application/octet-stream"):
            resp = _post(client, "digit", body, json_size, content_type=content_type)
            assert resp.status_code == 400, (what, resp.get_data()[:300])
            _assert_error(resp, 400, fragment)


def test_non_finite_binary_floats_are_refused_like_json_ones(client):
    card = get_card("wine")
    values = np.full((1, card.input_dim), 1.0)
    values[0, 2] = np.nan
    head = {"inputs": [{"name": card.input_name, "datatype": "FP64", "shape": [1, card.input_dim],
                        "parameters": {"binary_data_size": values.nbytes}}]}  # fmt: skip
    body, n = _hand_body(head, values.tobytes())
    _assert_error(_post(client, "wine", body, n), 400, "element 2 is not a finite number")


def test_a_bom_before_the_json_header_is_refused(client):
    body, n = _hand_body(_digit_input(784), bytes(784))
    bom = b"\xef\xbb\xbf"
    _assert_error(
        _post(client, "digit", bom + body, n + 3, "application/octet-stream"), 400, "byte-order mark"
    )
    # Sent as JSON, the guard refuses it first, as it does for any JSON body with a BOM.
    _assert_error(_post(client, "digit", bom + body, n + 3, "application/json"), 415, "byte-order mark")


def test_the_body_limit_holds_for_binary_bodies(make_app, artifacts):
    client = make_app(ARTIFACTS_DIR=artifacts, MODELS=("digit",), MAX_BODY_BYTES=2048).test_client()
    body, n = _hand_body(_digit_input(784 * 3, shape=(3, 784)), bytes(784 * 3))
    _assert_error(_post(client, "digit", body, n), 413, "DLQR_MAX_BODY_BYTES")
