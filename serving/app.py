"""Application factory: ``create_app(config=None)``.

Wires settings, JSON logging, error handlers, metrics, the model registry,
the API routes and the docs, each through a small ``init_app``; everything
per model comes from the registered cards (:mod:`dlqr.card`). Nothing heavy
runs at import. By default the models are verified, loaded into ONNX Runtime
and self-tested right here, synchronously: under Gunicorn that is in each
worker after fork and before it accepts its first connection, so a worker
that takes requests can always answer them (a replaced worker never answers
503 for loading while another could serve).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from serving.runtime import prepare_process_env
from serving.settings import Settings, SettingsError

#: Extra config keys (besides upper-cased Settings fields such as ARTIFACTS_DIR, MAX_BATCH):
#: SETTINGS: a ready Settings object; MODEL_LOADING: "sync" (default) or "none" (nothing loaded);
#: MODELS: names to serve (default DLQR_MODELS, else every registered card);
#: WATCH: start this process's repository watcher (hot swap; serving/wsgi.py sets it for Gunicorn workers).
LOADING_MODES = ("sync", "none")


def _settings(config: Mapping[str, Any]) -> Settings:
    if isinstance(config.get("SETTINGS"), Settings):
        return config["SETTINGS"]
    overrides = {k.lower(): v for k, v in config.items() if k.lower() in Settings.model_fields}
    if "artifacts_dir" in overrides:
        from pathlib import Path

        overrides["artifacts_dir"] = Path(overrides["artifacts_dir"])
    if isinstance(overrides.get("models"), list | tuple):  # MODELS=("wine", ...) as documented above
        overrides["models"] = ",".join(overrides["models"])
    return Settings.from_env(**overrides)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app; raises SettingsError on invalid settings."""
    prepare_process_env()
    config = dict(config or {})
    settings = _settings(config)
    settings.check_artifacts_dir()
    mode = config.get("MODEL_LOADING", "sync")
    if mode not in LOADING_MODES:
        raise SettingsError(f"MODEL_LOADING={mode!r}: must be one of {', '.join(LOADING_MODES)}")

    from dlqr import card as cards
    from serving import api, budget, canary, errors, guard, logs, metrics, openapi, shadow, v2
    from serving.batching import BatchingRunner
    from serving.dataplane import DataPlane
    from serving.registry import Registry
    from serving.schemas import build_schemas
    from serving.service import Service, package_version

    logs.configure(settings.log_level)
    app = Flask("serving")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes + 1,  # see api.predict: tells a cut chunked body
        JSON_SORT_KEYS=False,
        DLQR_SETTINGS=settings,
    )
    names = tuple(config.get("MODELS") or settings.model_names or cards.names())
    try:
        served = tuple(cards.get(n) for n in names)
    except cards.UnknownModel as exc:
        raise SettingsError(
            f"DLQR_MODELS={','.join(names)!r}: no model card named {exc.args[0]!r} "
            f"(registered: {', '.join(cards.names())})"
        ) from None
    errors.init_app(app)
    met = metrics.init_app(app, served)
    schemas = build_schemas(served, settings.max_batch)
    scorer = shadow.ShadowScorer(None, shadow.ShadowMetrics(met.registry))

    def on_change(state) -> None:
        served = [(v.version, v.model.bundle.onnx_sha256 or "") for v in state.served()]
        met.set_served_versions(state.name, state.ready, served)
        if state.model is not None and state.model.range_min is not None:
            met.declare_ranges(state.name, state.model.features)
        met.routing_invalid.labels(state.name).set(1 if state.routing_error else 0)
        if "dlqr" in app.extensions:  # the first shadow in a routing registers the shadow scorer
            scorer.install_when_needed(app.extensions["dlqr"].plane, state)

    registry = Registry(
        settings.artifacts_dir,
        validators={n: schemas[n].instance_adapter.validate_python for n in names},
        names=names,
        on_change=on_change,
        intra_op_threads=settings.ort_threads,
        keras_check=settings.keras_crosscheck,
        policy=settings.policy,
        on_refused=lambda name, version: met.model_refused.labels(name).inc(),
    )
    scorer.registry = registry
    app.extensions["dlqr"] = Service(
        settings=settings,
        registry=registry,
        metrics=met,
        schemas=schemas,
        # charge_pixels: each image's header-declared size counts against the request's budget
        # (serving/budget.py) before it is decoded (dlqr.images).
        validation_context={
            "max_image_pixels": settings.max_image_pixels,
            "charge_pixels": budget.charge_pixels,
        },
        access_log=logs.AccessLog(),
        plane=DataPlane(registry, met),
    )
    from serving import monitor, payload_log

    plane = app.extensions["dlqr"].plane
    monitor.init_app(app, settings, met, registry, plane)  # observers of the data plane
    payload_log.init_app(app, settings, met, {c.name: c for c in served}, plane)
    the_guard = guard.init_app(app, settings, met.registry)  # must stay inside api's observability wrapper
    # Adaptive batching under gevent: concurrent requests of this worker join one model run.
    app.extensions["dlqr"].plane.runner = BatchingRunner(
        settings.max_batch_size,
        settings.max_queue_delay_microseconds,
        gevent=the_guard.gevent,
        others_in_flight=lambda: the_guard.inflight - 1,
        observe=met.observe_batch,
    )
    # Canary share, routing keys and shadow scoring (docs/lifecycle.md).
    app.extensions["dlqr"].plane.resolver = canary.routing_resolver
    scorer.busy = lambda: the_guard.inflight >= the_guard.max_inflight
    api.init_app(app)
    v2.init_app(app, served)
    openapi.init_app(app, schemas, package_version(), v2.openapi_paths(app.extensions["dlqr_v2"]))
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
    if config.get("WATCH"):
        from serving.registry import start_watcher

        app.extensions["dlqr_watcher"] = start_watcher(registry, settings.poll_seconds)
    return app
