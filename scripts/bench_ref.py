"""Reference servers for ``scripts/bench.py`` (never deployed).

Both run under the same Gunicorn config as the real service:

- ``floor_app()``: Flask parses the same JSON body and returns a constant.
  Nothing can be faster with this stack; the service is measured against it.
- ``naive_app()``: what tutorials do: Flask + Keras ``model.predict`` on every
  request over the same bundles' ``model.h5`` (needs Keras/TensorFlow installed;
  the service itself runs ONNX Runtime).
- ``fastapi_app()``: what a user writes in an afternoon with FastAPI: uvicorn
  (2 worker processes, as the service's 2 Gunicorn workers), the same bundles'
  ``model.onnx`` in ONNX Runtime on one intra-op thread, pydantic validation of
  the same request body. Started by ``scripts/bench.py`` with ``uvicorn
  --factory --workers 2`` (its access log off: a stricter reference than the
  service, which writes one JSON line per request).
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask, Response, request  # noqa: E402

from serving.runtime import prepare_process_env  # noqa: E402

CONSTANT = json.dumps({"model": "floor", "version": "0", "predictions": [{"value": 0.0}]})


def floor_app() -> Flask:
    """Parse the JSON body, answer a constant."""
    app = Flask("floor")

    @app.post("/predict/<name>")
    def predict(name: str) -> Response:
        json.loads(request.get_data())
        return Response(CONSTANT, content_type="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        return Response('{"status":"ready"}', content_type="application/json")

    return app


def naive_app() -> Flask:
    """Flask + keras ``model.predict`` per request, as in most tutorials."""
    prepare_process_env()
    import keras
    import numpy as np
    from pydantic import TypeAdapter

    from dlqr import card as cards
    from dlqr import processing, repository
    from dlqr.bundle import load_bundle

    root = Path(os.environ.get("DLQR_ARTIFACTS_DIR") or Path(__file__).resolve().parents[1] / "artifacts")
    models = {}
    for card in cards.all_cards():
        b = load_bundle(repository.latest_dir(root / card.name) or root / card.name, card.name)
        km = keras.saving.load_model(str(b.model_path), compile=False)
        models[card.name] = (card, TypeAdapter(card.instance), km, b.preprocessing, b.version)
    app = Flask("naive")

    @app.post("/predict/<name>")
    def predict(name: str) -> Response:
        card, adapter, model, prep, version = models[name]
        body = request.get_json()
        instances = [adapter.validate_python(i) for i in body.get("instances", [body])]
        raw = card.rows(instances, prep["features"])
        out = np.asarray(model.predict(processing.model_input(raw, prep), verbose=0), dtype=np.float64)
        preds = card.task.postprocessor(prep)(out)
        return Response(
            json.dumps({"model": name, "version": version, "predictions": preds}),
            content_type="application/json",
        )

    @app.get("/readyz")
    def readyz() -> Response:
        return Response('{"status":"ready"}', content_type="application/json")

    return app


def fastapi_app():
    """FastAPI + ONNX Runtime by hand: validate the body, run ``model.onnx``, answer JSON."""
    prepare_process_env()
    import numpy as np
    import onnxruntime as ort
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import Response as FastResponse
    from pydantic import TypeAdapter, ValidationError

    from dlqr import card as cards
    from dlqr import processing, repository
    from dlqr.bundle import load_bundle

    root = Path(os.environ.get("DLQR_ARTIFACTS_DIR") or Path(__file__).resolve().parents[1] / "artifacts")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    models = {}
    for card in cards.all_cards():
        b = load_bundle(repository.latest_dir(root / card.name) or root / card.name, card.name)
        sess = ort.InferenceSession(str(b.onnx_path), opts, providers=["CPUExecutionProvider"])
        post = card.task.postprocessor(b.preprocessing)
        models[card.name] = (card, TypeAdapter(card.instance), sess, b.preprocessing, b.version, post)
    app = FastAPI()

    @app.post("/predict/{name}")
    async def predict(name: str, request: Request):
        if name not in models:
            raise HTTPException(404, f"unknown model {name}")
        card, adapter, sess, prep, version, post = models[name]
        body = json.loads(await request.body())
        try:
            instances = [adapter.validate_python(i) for i in body.get("instances", [body])]
        except ValidationError as exc:
            raise HTTPException(422, str(exc)) from None
        x = processing.model_input(card.rows(instances, prep["features"]), prep)
        out = sess.run(None, {sess.get_inputs()[0].name: x})[0].astype(np.float64)
        body = json.dumps({"model": name, "version": version, "predictions": post(out)})
        return FastResponse(body, media_type="application/json")

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready"}

    return app
