"""HTTP endpoints: predictions, model metadata, health and readiness.

The per-request plumbing every response shares (``X-Request-ID``, the JSON
access-log line, request metrics) is :mod:`serving.observability`, installed
by :func:`init_app`.

``/predict`` is a thin door over :mod:`serving.dataplane`: it reads the body
(one pydantic-core pass parses and validates JSON; a raw image goes through the
card's decoder), hands the rows to the data plane, and renders its
:class:`~serving.dataplane.Prediction` as JSON (or its
:class:`~serving.errors.ServingError` as problem+json). Nothing here knows a
model by name: every per-model fact comes from its card.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, Response, request
from pydantic import ValidationError

from serving.canary import VERSION_HEADER
from serving.dataplane import RequestInfo
from serving.errors import ServingError, problem_response
from serving.observability import BATCH_KEY, MODEL_KEY, REQUEST_ID_KEY
from serving.registry import ModelState
from serving.schemas import ModelSchemas
from serving.service import Service, encode, read_body, service

JSON_TYPES = ("application/json",)

bp = Blueprint("api", __name__)


# ------------------------------------------------------------------- predict


def _json_body_type(mimetype: str) -> bool:
    return mimetype in JSON_TYPES or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _validation_problem(exc: ValidationError, schemas: ModelSchemas) -> ServingError:
    raw = exc.errors(include_url=False, include_input=False)
    for err in raw:
        if err["type"] == "json_invalid":
            return ServingError(
                400,
                "malformed-json",
                f"request body is not valid JSON: {err['ctx'].get('error', err['msg'])}",
            )
    for err in raw:
        if err["type"] == "too_long" and [p for p in err["loc"] if p != "batch"] == ["instances"]:
            n = err.get("ctx", {}).get("actual_length", "more")
            return ServingError(
                413,
                "batch-too-large",
                f"batch of {n} instances exceeds the limit of {schemas.max_batch} (DLQR_MAX_BATCH); "
                "split the request",
            )
    errors = schemas.field_errors(exc)
    first = errors[0]
    where = "/".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ServingError(
        422,
        "validation-error",
        f"{where}: {first['msg']}{more}",
        errors=errors,
        extra={"error_count": exc.error_count()} if exc.error_count() > len(errors) else None,
    )


def predict(name: str) -> Response:
    """Predict one instance or a batch; see the module docstring and /docs."""
    svc = service()
    plane = svc.plane
    req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
    environ = req.environ
    info = RequestInfo(
        "predict",
        req.args.get("version") if environ.get("QUERY_STRING") else None,
        environ.get(REQUEST_ID_KEY),
        req.headers,
    )
    state = plane.state(name)
    schemas = svc.schemas[name]
    card = schemas.card
    environ[MODEL_KEY] = name
    mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    decoder = card.media.get(mimetype)
    if decoder is None and not _json_body_type(mimetype):
        accepted = ", ".join(("application/json", *card.media))
        raise ServingError(
            415, "unsupported-media-type",
            f"Content-Type {mimetype or '(none)'!r} is not accepted by /predict/{name}; send {accepted}",
        )  # fmt: skip
    model = plane.resolver(state, info)
    body = read_body(req)
    if not body:
        raise ServingError(400, "bad-request", "request body is empty")
    if decoder is not None:
        try:
            raw = decoder(body, svc.validation_context)
        except ValueError as exc:  # the decoders' errors (e.g. ImageError) carry a client message
            raise ServingError(
                422,
                "validation-error",
                f"body: {exc}",
                errors=[{"loc": ["body"], "msg": str(exc), "type": "media_invalid"}],
            ) from None
    else:
        try:
            instances = schemas.parse(body, svc.validation_context)
        except ValidationError as exc:
            raise _validation_problem(exc, schemas) from None
        raw = card.rows(instances, model.features)
    environ[BATCH_KEY] = len(raw)
    pred = plane.predict(model, raw, info)
    return Response(
        encode({"model": name, "version": pred.version, "predictions": pred.predictions}),
        content_type="application/json",
        headers={VERSION_HEADER: pred.version},
    )


# -------------------------------------------------------------------- models


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status=status, content_type="application/json")


def model_summary(svc: Service, state: ModelState, detail: bool = False) -> dict[str, Any]:
    """Public description of one model (``/models`` and ``/models/<name>``)."""
    name = state.name
    schemas = svc.schemas[name]
    card = schemas.card
    bundle = state.bundle
    out: dict[str, Any] = {
        "name": name,
        "title": card.title,
        "task": card.task.kind,
        "endpoint": f"/predict/{name}",
        "status": state.status,
        "ready": state.ready,
        "reason": state.reason,
        "version_policy": state.policy,
        "versions": [v.describe() for v in state.versions.values()],
    }
    if bundle is not None:
        man = bundle.manifest
        out.update(
            version=bundle.version,
            created=man.get("created"),
            git_commit=man.get("git_commit"),
            backend=man.get("backend"),
            model_sha256=bundle.model_sha256,
            onnx_sha256=bundle.onnx_sha256,
            bundle_sha256=man.get("files"),
            test_metrics=_scalar_metrics(bundle.metrics.get("test", {})),
        )
        if "threshold" in bundle.preprocessing:
            out["threshold"] = bundle.preprocessing["threshold"]
    if not detail:
        return out
    out["description"] = card.description
    out["input_schema"] = schemas.instance_adapter.json_schema()
    out["media_types"] = ["application/json", *card.media]
    out["max_batch"] = schemas.max_batch
    out["output"] = {"description": card.task.describe(), "schema": schemas.prediction.model_json_schema()}
    out.update(card.extra)
    if bundle is not None:
        prep = bundle.preprocessing
        out["features"] = prep.get("features")
        out["feature_ranges"] = prep.get("feature_ranges")
        out["metrics"] = bundle.metrics
    if state.model is not None:
        out["runtime"] = state.model.runtime
        out["selftest"] = state.model.selftest
        out["load_seconds"] = round(state.model.load_seconds, 3)
    return out


def _scalar_metrics(test: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers only (no confusion matrices) for the list view."""
    return {k: v for k, v in test.items() if isinstance(v, int | float) and not isinstance(v, bool)}


@bp.get("/models")
def list_models() -> Response:
    svc = service()
    return _json({"models": [model_summary(svc, s) for s in svc.registry.states.values()]})


def get_model(name: str) -> Response:
    svc = service()
    return _json(model_summary(svc, svc.plane.state(name), detail=True))


def get_model_card(name: str) -> Response:
    """The served bundle's MODEL_CARD.md (intended use, data, metrics with the baseline, caveats)."""
    from dlqr.bundle import MODEL_CARD_FILE

    svc = service()
    bundle = svc.plane.state(name).bundle
    # Only a file the manifest lists (so its sha256 was verified at load) is served.
    if bundle is None or MODEL_CARD_FILE not in bundle.manifest.get("files", {}):
        raise ServingError(404, "not-found", f"model {name} has no {MODEL_CARD_FILE} in its served bundle")
    text = (bundle.root / MODEL_CARD_FILE).read_text(encoding="utf-8")
    return Response(text, content_type="text/markdown; charset=utf-8")


# -------------------------------------------------------------------- health


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers (models may still be loading)."""
    return _json({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: every bundle verified, loaded and self-tested in this worker."""
    svc = service()
    models = {
        s.name: {"status": s.status, "version": s.bundle.version if s.bundle else None, "reason": s.reason}
        for s in svc.registry.states.values()
    }
    for s in svc.registry.states.values():  # the routing applied, and why a routing file is not
        if s.routing is not None or s.routing_error:
            models[s.name].update(routing=s.routing.describe() if s.routing else None,
                                  routing_error=s.routing_error)  # fmt: skip
    if svc.registry.all_ready:
        lagging = svc.metrics.cluster_not_ready(svc.settings.workers)
        if lagging is None:
            return _json({"status": "ready", "models": models})
        return problem_response(503, "not-ready", f"not ready: {lagging}", extra={"models": models},
                                headers={"Retry-After": "2"})  # fmt: skip
    reasons = "; ".join(f"{n}: {m['status']}" + (f" ({m['reason']})" if m["reason"] else "") for n, m in models.items()
                        if m["status"] != "ready")  # fmt: skip
    loading = any(m["status"] in ("pending", "loading") for m in models.values())
    return problem_response(503, "not-ready", f"not ready: {reasons}", extra={"models": models},
                            headers={"Retry-After": "5"} if loading else None)  # fmt: skip


# --------------------------------------------------------------- registration


def init_app(app: Flask) -> None:
    """Register the blueprint, one predict and one model route per served card, and the
    request-id / access-log / metrics middleware."""
    from serving.observability import RequestObservability, record_url_rule, url_rule_resolver

    svc = app.extensions["dlqr"]
    # One rule per model: the matched rule is the bounded ``endpoint`` metric label
    # ("/predict/wine"), and a route exists exactly for each registered card.
    for name in svc.registry.names:
        app.add_url_rule(
            f"/predict/{name}", f"predict_{name}", predict, methods=["POST"], defaults={"name": name}
        )
        app.add_url_rule(
            f"/models/{name}", f"model_{name}", get_model, methods=["GET"], defaults={"name": name}
        )
    # Any other name: a 404 problem naming the models that exist.
    app.add_url_rule("/predict/<name>", "predict_unknown", predict, methods=["POST"])
    app.add_url_rule("/models/<name>", "model_unknown", get_model, methods=["GET"])
    app.add_url_rule("/models/<name>/card", "model_card_unknown", get_model_card, methods=["GET"])
    app.register_blueprint(bp)
    record_url_rule(app)
    app.wsgi_app = RequestObservability(app.wsgi_app, svc.metrics, svc.access_log, url_rule_resolver(app))


__all__ = ["init_app", "model_summary"]
