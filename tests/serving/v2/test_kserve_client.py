"""KServe's own Open Inference Protocol client (``kserve.InferenceRESTClient``) against the real server.

``kserve`` 0.21.0 is not in this project's environment: it needs pandas<3 and protobuf<7, which
the training extra outgrows. ``make kserve-venv`` builds it a small environment of its own,
``.venv-kserve`` (``requirements/kserve-client.txt``; CI builds it), and each case here runs the
client there in a subprocess (``kserve_client.py``) against the real Gunicorn server of
``v2_target``. ``DLQR_KSERVE_PYTHON`` names another interpreter that has ``kserve``. Without one
the module skips on a developer machine and fails under CI (``CI=true``), so CI never reports
these cases as skipped.

The client sends inputs set from numpy as binary tensors by default, and reads binary or JSON
outputs; every golden pair must come back as ``/predict`` answers it.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dlqr.card import names as card_names
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration
CLIENT = Path(__file__).with_name("kserve_client.py")
NUMPY = {"UINT8": np.uint8, "FP32": np.float32, "FP64": np.float64}


def kserve_python(environ: dict[str, str], root: Path) -> Path | None:
    """The interpreter that has ``kserve``: ``$DLQR_KSERVE_PYTHON``, else ``.venv-kserve``; None if absent."""
    named = environ.get("DLQR_KSERVE_PYTHON")
    path = Path(named) if named else root / ".venv-kserve" / "bin" / "python"
    return path if path.is_file() else None


def in_ci(environ: dict[str, str]) -> bool:
    return environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="module")
def client_python() -> Path:
    found = kserve_python(os.environ, REPO_ROOT)
    if found is None:
        why = "no interpreter with kserve: run `make kserve-venv` (or set DLQR_KSERVE_PYTHON)"
        if in_ci(os.environ):
            pytest.fail(why + "; CI must run these cases, not skip them")
        pytest.skip(why)
    return found


def test_kserve_python_prefers_the_named_interpreter(tmp_path):
    venv = tmp_path / ".venv-kserve" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("")
    named = tmp_path / "other-python"
    assert kserve_python({}, tmp_path) == venv / "python"
    assert kserve_python({"DLQR_KSERVE_PYTHON": str(named)}, tmp_path) is None  # named but missing
    named.write_text("")
    assert kserve_python({"DLQR_KSERVE_PYTHON": str(named)}, tmp_path) == named
    assert kserve_python({}, tmp_path / "elsewhere") is None
    assert in_ci({"CI": "true"}) and in_ci({"CI": "1"}) and not in_ci({}) and not in_ci({"CI": "false"})


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


def _run_client(python: Path, spec: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    proc = subprocess.run(
        [str(python), str(CLIENT)], input=json.dumps(spec), capture_output=True, text=True,
        timeout=120, env=env, cwd=CLIENT.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("outputs", ["json", "binary"])
@pytest.mark.parametrize("model", card_names())
def test_kserve_client_round_trip_equals_predict(client_python, v2_target, model, outputs):
    sample = v2_target.samples[model]
    md = _get(f"{v2_target.base_url}/v2/models/{model}")
    (spec,) = md["inputs"]
    rows = sample.rows.reshape([len(sample.rows), *spec["shape"][1:]]).astype(NUMPY[spec["datatype"]])
    binary = [o["name"] for o in md["outputs"]] if outputs == "binary" else None
    got = _run_client(client_python, {
        "base_url": v2_target.base_url, "model": model, "request_id": "ks-1", "binary_outputs": binary,
        "input": {"name": spec["name"], "datatype": spec["datatype"], "shape": list(rows.shape),
                  "data": rows.ravel().tolist()},
    })  # fmt: skip
    assert "error" not in got, got.get("error")
    # the body held a JSON header, then exactly the tensor's bytes: binary input data
    assert got["json_length"] is not None and got["body_bytes"] - got["json_length"] == rows.nbytes
    assert ("inference-header-content-length" in got["response_headers"]) == (outputs == "binary")
    assert got["id"] == "ks-1" and got["model_name"] == model
    served = _predict(v2_target.base_url, model, sample.instances, sample.version)["predictions"]
    tensors = {name: np.asarray(o["data"]).reshape(o["shape"]) for name, o in got["outputs"].items()}
    assert set(tensors) == {o["name"] for o in md["outputs"]}
    for t in sample.card.task.tensor_outputs():
        assert tensors[t.name].reshape(len(rows), *t.dims).tolist() == [p[t.key] for p in served], t.name
    assert tensors["raw_output"].size == len(rows) * sample.card.output_dim


def test_kserve_client_sees_the_servers_error_message(client_python, v2_target):
    model = card_names()[0]
    card = v2_target.samples[model].card
    got = _run_client(client_python, {
        "base_url": v2_target.base_url, "model": model,
        "input": {"name": card.input_name, "datatype": "FP64", "shape": [1, card.input_dim + 1],
                  "data": [0.0] * (card.input_dim + 1)},
    })  # fmt: skip
    assert "shape" in got.get("error", ""), got
    assert "400" in got["error"]
