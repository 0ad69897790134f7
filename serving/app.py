"""Application factory: ``create_app(config=None)``.

Wires settings, JSON logging, error handlers, metrics, the model registry,
the API routes and the docs, each through a small ``init_app``. Nothing heavy
runs at import: Keras is only imported by the registry's loader, which by
default runs in a background thread started here, i.e. in each Gunicorn worker
after fork. ``/healthz`` therefore answers immediately and ``/readyz`` turns
200 once every bundle is verified, loaded and self-tested.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import fields
from importlib import metadata
from typing import Any

from flask import Flask

from serving.runtime import prepare_process_env
from serving.settings import Settings, SettingsError

#: Extra config keys (besides upper-cased Settings fields such as ARTIFACTS_DIR, MAX_BATCH):
#: SETTINGS: a ready Settings object; MODEL_LOADING: "background" (default), "sync" or "none";
#: MODELS: names to load (default all three).
LOADING_MODES = ("background", "sync", "none")


def _settings(config: Mapping[str, Any]) -> Settings:
    if isinstance(config.get("SETTINGS"), Settings):
        return config["SETTINGS"]
    names = {f.name for f in fields(Settings)}
    overrides = {k.lower(): v for k, v in config.items() if k.lower() in names}
    if "artifacts_dir" in overrides:
        from pathlib import Path

        overrides["artifacts_dir"] = Path(overrides["artifacts_dir"])
    return Settings.from_env(**overrides)


def _package_version() -> str:
    try:
        return metadata.version("dlqr-serving")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app; raises SettingsError on invalid settings."""
    prepare_process_env()
    config = dict(config or {})
    settings = _settings(config)
    settings.check_artifacts_dir()
    mode = config.get("MODEL_LOADING", "background")
    if mode not in LOADING_MODES:
        raise SettingsError(f"MODEL_LOADING={mode!r}: must be one of {', '.join(LOADING_MODES)}")

    from serving import api, errors, guard, logs, metrics, openapi
    from serving.registry import Registry
    from serving.schemas import build_schemas
    from serving.spec import MODEL_NAMES

    logs.configure(settings.log_level)
    app = Flask("serving")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes + 1,  # see api.predict: tells a cut chunked body
        JSON_SORT_KEYS=False,
        DLQR_SETTINGS=settings,
    )
    errors.init_app(app)
    met = metrics.init_app(app)
    schemas = build_schemas(settings.max_batch)

    def on_change(state) -> None:
        if state.ready:
            met.set_model_state(state.name, True, state.model.version, state.model.bundle.model_sha256)
        else:
            met.set_model_state(state.name, False)

    registry = Registry(
        settings.artifacts_dir,
        validators={n: schemas[n].instance_adapter.validate_python for n in MODEL_NAMES},
        names=config.get("MODELS", MODEL_NAMES),
        on_change=on_change,
    )
    app.extensions["dlqr"] = api.Service(
        settings=settings,
        registry=registry,
        metrics=met,
        schemas=schemas,
        validation_context={"max_image_pixels": settings.max_image_pixels},
        access_log=logs.AccessLog(),
    )
    guard.init_app(app, settings, met.registry)  # issue 8; must stay inside api's observability wrapper
    api.init_app(app)
    openapi.init_app(app, schemas, _package_version())
    logging.getLogger("serving.app").info(
        "app created",
        extra={
            "event": "app_created",
            "artifacts_dir": str(settings.artifacts_dir),
            "max_batch": settings.max_batch,
            "max_body_bytes": settings.max_body_bytes,
            "model_loading": mode,
            "metrics_multiprocess": met.multiprocess,
        },
    )
    if mode == "sync":
        registry.load_all()
    elif mode == "background":
        registry.start_background()
    return app
