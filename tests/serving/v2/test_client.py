"""An official Open Inference Protocol client (``tritonclient[http]``) against the real server.

The round trip must give exactly the predictions ``/predict`` gives, on every golden
pair of every bundle, with the tensors typed as the model metadata declares: with the
client's default settings (binary tensors both ways) and with JSON tensors.
"""

from __future__ import annotations

import json
import urllib.request
from urllib.parse import urlparse

import numpy as np
import pytest

from dlqr.card import names as card_names

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the dev extra")

pytestmark = pytest.mark.integration
NUMPY = {"UINT8": np.uint8, "FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_}


@pytest.fixture(scope="module")
def client(v2_target):
    c = httpclient.InferenceServerClient(url=urlparse(v2_target.base_url).netloc, connection_timeout=30,
                                         network_timeout=30)  # fmt: skip
    yield c
    c.close()


def _predict(base_url: str, model: str, instances: list[dict], version: str) -> dict:
    req = urllib.request.Request(
        f"{base_url}/predict/{model}?version={version}",
        data=json.dumps({"instances": instances}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_server_health_and_metadata_through_the_client(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "dlqr-serving" and {"binary_tensor_data", "model_versions"} <= set(
        meta["extensions"]
    )


def _infer(client, model, spec, rows, datatype, version, declared, encoding):
    """tritonclient's infer with its default settings (binary tensors both ways) or JSON tensors."""
    inp = httpclient.InferInput(spec["name"], list(rows.shape), datatype)
    if encoding == "default":
        inp.set_data_from_numpy(rows.astype(NUMPY[datatype]))
        outputs = None  # the client then asks for every output, binary
    else:
        inp.set_data_from_numpy(rows.astype(NUMPY[datatype]), binary_data=False)
        outputs = [httpclient.InferRequestedOutput(name, binary_data=False) for name in declared]
    return client.infer(model, [inp], model_version=version, outputs=outputs, request_id="golden")


@pytest.mark.parametrize("encoding", ["default", "json"])
@pytest.mark.parametrize("model", card_names())
def test_tritonclient_round_trip_equals_predict_on_every_golden_pair(client, v2_target, model, encoding):
    sample = v2_target.samples[model]
    assert client.is_model_ready(model) and client.is_model_ready(model, sample.version)
    md = client.get_model_metadata(model, sample.version)
    (spec,) = md["inputs"]
    declared = {o["name"]: o for o in md["outputs"]}
    tensors = {t.name: t for t in sample.card.task.tensor_outputs()}
    served = _predict(v2_target.base_url, model, sample.instances, sample.version)
    rows = sample.rows.reshape([len(sample.rows), *spec["shape"][1:]])
    datatypes = [spec["datatype"], *(["FP32"] if spec["datatype"] == "FP64" else [])]
    for datatype in datatypes:  # the declared type, and FP32 where the card takes floats
        result = _infer(client, model, spec, rows, datatype, sample.version, declared, encoding)
        response = result.get_response()
        assert response["id"] == "golden" and response["model_version"] == served["version"] == sample.version
        assert [o["name"] for o in response["outputs"]] == list(declared)
        for out in response["outputs"]:  # binary exactly when the client asked for it
            assert ("data" not in out) == (encoding == "default"), out
        for name, out in declared.items():
            arr = result.as_numpy(name)
            assert arr.shape == (len(rows), *out["shape"][1:]), name
            assert arr.dtype == NUMPY.get(out["datatype"], arr.dtype), name
        raw = result.as_numpy("raw_output")
        for i, pred in enumerate(served["predictions"]):
            got = dict(pred)
            for name, t in tensors.items():
                value = result.as_numpy(name)[i]
                got[t.key] = value.tolist()
                if datatype == spec["datatype"]:  # the same input values: bit for bit the same answer
                    assert np.array_equal(value, np.asarray(pred[t.key]).astype(value.dtype)), (
                        model,
                        i,
                        name,
                    )
            # FP32 rounds inputs such as 0.27 slightly: the same prediction within the golden tolerance.
            assert sample.card.task.compare(got, pred, sample.prep) is None, (model, datatype, i, got, pred)
            assert sample.card.task.compare(pred, sample.predictions[i], sample.prep) is None
            assert raw[i].shape == (sample.card.output_dim,)


def test_client_errors_carry_the_server_message(client, v2_target):
    model = card_names()[0]
    sample = v2_target.samples[model]
    for binary in (True, False):
        inp = httpclient.InferInput(sample.card.input_name, [1, sample.card.input_dim + 1], "FP64")
        inp.set_data_from_numpy(np.zeros((1, sample.card.input_dim + 1)), binary_data=binary)
        with pytest.raises(httpclient.InferenceServerException, match="shape") as info:
            client.infer(model, [inp])
        assert info.value.status() == "400"
    with pytest.raises(Exception, match="unknown model"):
        client.get_model_metadata("no_such_model")
