"""KServe's own Open Inference Protocol client (``kserve.InferenceRESTClient``) against the real server.

``kserve`` is not a dependency of this project (it pins pandas below 3 and protobuf below 7,
which the training extra outgrows), so this module skips where it is not installed. Run it
from an environment that has it, against a server started elsewhere:
``DLQR_V2_BASE_URL=http://127.0.0.1:8000 pytest tests/serving/v2/test_kserve_client.py``
(see ``docs/v2-binary.md``).

The client sends inputs set from numpy as binary tensors by default, and reads binary or JSON
outputs; every golden pair must come back as ``/predict`` answers it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
import pytest

from dlqr.card import names as card_names

kserve = pytest.importorskip("kserve", reason="kserve is not installed (see the module docstring)")

pytestmark = pytest.mark.integration
NUMPY = {"UINT8": np.uint8, "FP32": np.float32, "FP64": np.float64}


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _predict(base_url: str, model: str, instances: list[dict], version: str) -> dict:
    req = urllib.request.Request(
        f"{base_url}/predict/{model}?version={version}",
        data=json.dumps({"instances": instances}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


async def _infer(base_url: str, model: str, request, headers: dict) -> object:
    client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=30))
    try:
        return await client.infer(base_url, request, model_name=model, response_headers=headers)
    finally:
        await client._client.aclose()  # the client offers no public close


@pytest.mark.parametrize("outputs", ["json", "binary"])
@pytest.mark.parametrize("model", card_names())
def test_kserve_client_round_trip_equals_predict(v2_target, model, outputs):
    from kserve.protocol.infer_type import RequestedOutput

    sample = v2_target.samples[model]
    md = _get(f"{v2_target.base_url}/v2/models/{model}")
    (spec,) = md["inputs"]
    rows = sample.rows.reshape([len(sample.rows), *spec["shape"][1:]]).astype(NUMPY[spec["datatype"]])
    inp = kserve.InferInput(spec["name"], list(rows.shape), spec["datatype"])
    inp.set_data_from_numpy(rows)  # the client's default: binary tensor data
    wanted = None
    if outputs == "binary":
        wanted = [RequestedOutput(o["name"], parameters={"binary_data": True}) for o in md["outputs"]]
    request = kserve.InferRequest(model, [inp], request_id="ks-1", request_outputs=wanted)
    body, json_length = request.to_rest()  # what infer() sends: a JSON header, then the tensor bytes
    assert json_length is not None and len(body) - json_length == rows.nbytes
    headers: dict = {}
    result = asyncio.run(_infer(v2_target.base_url, model, request, headers))
    assert ("inference-header-content-length" in {k.lower() for k in headers}) == (outputs == "binary")
    assert result.id == "ks-1" and result.model_name == model
    served = _predict(v2_target.base_url, model, sample.instances, sample.version)["predictions"]
    got = {o.name: o.as_numpy() for o in result.outputs}
    assert set(got) == {o["name"] for o in md["outputs"]}
    for t in sample.card.task.tensor_outputs():
        assert got[t.name].reshape(len(rows), *t.dims).tolist() == [p[t.key] for p in served], t.name
    assert got["raw_output"].size == len(rows) * sample.card.output_dim


def test_kserve_client_sees_the_servers_error_message(v2_target):
    model = card_names()[0]
    card = v2_target.samples[model].card
    inp = kserve.InferInput(card.input_name, [1, card.input_dim + 1], "FP64")
    inp.set_data_from_numpy(np.zeros((1, card.input_dim + 1)))
    request = kserve.InferRequest(model, [inp])
    with pytest.raises(Exception, match="shape") as info:
        asyncio.run(_infer(v2_target.base_url, model, request, {}))
    assert "400" in str(info.value)
