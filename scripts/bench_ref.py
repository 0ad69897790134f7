"""Reference servers for ``scripts/bench.py`` (never deployed).

Both run under the same Gunicorn config as the real service:

- ``floor_app()``: Flask parses the same JSON body and returns a constant.
  Nothing can be faster with this stack; the service is measured against it.
- ``naive_app()``: what tutorials do: Flask + Keras ``model.predict`` on every
  request over the same bundles' ``model.h5`` (needs Keras/TensorFlow installed;
  the service itself runs ONNX Runtime).
"""

from __future__ import annotations

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
