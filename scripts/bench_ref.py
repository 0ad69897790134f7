"""Reference servers for ``scripts/bench.py`` (never deployed).

Both run under the same Gunicorn config as the real service:

- ``floor_app()``: Flask parses the same JSON body and returns a constant.
  Nothing can be faster with this stack; the service is measured against it.
- ``naive_app()``: what tutorials do: Flask + ``model.predict`` on every request
  (no validation, no fast path), over the same bundles.
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

    from serving import processing
    from serving.bundle import load_bundle

    root = Path(os.environ.get("DLQR_ARTIFACTS_DIR") or Path(__file__).resolve().parents[1] / "artifacts")
    models = {}
    for name in ("wine", "seizure", "digit"):
        b = load_bundle(root / name, name)
        models[name] = (keras.saving.load_model(str(b.model_path), compile=False), b.preprocessing, b.version)
    app = Flask("naive")

    @app.post("/predict/<name>")
    def predict(name: str) -> Response:
        model, prep, version = models[name]
        body = request.get_json()
        instances = body.get("instances", [body])
        raw = np.array([processing.instance_to_row(name, i, prep) for i in instances])
        out = model.predict(processing.model_input(name, raw, prep), verbose=0)
        preds = processing.postprocess(name, out, prep)
        return Response(
            json.dumps({"model": name, "version": version, "predictions": preds}),
            content_type="application/json",
        )

    @app.get("/readyz")
    def readyz() -> Response:
        return Response('{"status":"ready"}', content_type="application/json")

    return app
