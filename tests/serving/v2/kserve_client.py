"""One inference with KServe's own ``InferenceRESTClient``, run in the interpreter that has ``kserve``.

``kserve`` 0.21.0 cannot live in the project's environment (it needs pandas<3 and protobuf<7),
so ``test_kserve_client.py`` runs this script with ``.venv-kserve/bin/python`` (``make
kserve-venv``). It imports only ``kserve`` and ``numpy``, never the project.

stdin: one JSON object ``{"base_url", "model", "request_id", "input": {"name", "datatype",
"shape", "data"}, "binary_outputs": [names] | null}``, ``data`` flat and row-major.
stdout: one JSON object: what the client sent (``body_bytes``, ``json_length``, ``tensor_bytes``),
the response headers' names, and the result (``id``, ``model_name``, ``outputs`` as
``{name: {"shape", "data"}}``), or ``{"error": "..."}`` when the client raised.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

NUMPY = {"UINT8": np.uint8, "FP32": np.float32, "FP64": np.float64}


async def _infer(base_url: str, model: str, request: InferRequest, headers: dict):
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        return await client.infer(base_url, request, model_name=model, response_headers=headers)
    finally:
        await client._client.aclose()  # the client offers no public close


def run(spec: dict) -> dict:
    """Send ``spec``'s tensor the client's default way (binary input data) and report what came back."""
    t = spec["input"]
    rows = np.asarray(t["data"], dtype=NUMPY[t["datatype"]]).reshape(t["shape"])
    inp = InferInput(t["name"], list(rows.shape), t["datatype"])
    inp.set_data_from_numpy(rows)  # the client's default: binary tensor data
    wanted = None
    if spec.get("binary_outputs"):
        wanted = [RequestedOutput(n, parameters={"binary_data": True}) for n in spec["binary_outputs"]]
    request = InferRequest(spec["model"], [inp], request_id=spec.get("request_id"), request_outputs=wanted)
    body, json_length = request.to_rest()  # what infer() sends: a JSON header, then the tensor bytes
    out: dict = {"body_bytes": len(body), "json_length": json_length, "tensor_bytes": int(rows.nbytes)}
    headers: dict = {}
    try:
        result = asyncio.run(_infer(spec["base_url"], spec["model"], request, headers))
    except Exception as exc:  # reported to the test, which asserts on the message
        return {**out, "error": f"{type(exc).__name__}: {exc}"}
    out["response_headers"] = sorted(k.lower() for k in headers)
    out["id"] = result.id
    out["model_name"] = result.model_name
    out["outputs"] = {
        o.name: {"shape": list(o.as_numpy().shape), "data": o.as_numpy().ravel().tolist()}
        for o in result.outputs
    }
    return out


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)
