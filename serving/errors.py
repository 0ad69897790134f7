"""The one error type of the service, and how each door renders it.

Every refusal, from the hardening middleware to the data plane, is a
:class:`ServingError`: an HTTP status, a stable type slug (documented on
``/docs``) and a detail for the client. Each door renders the same error in
its own wire format:

- :func:`problem_json`: RFC 9457 ``application/problem+json`` (``/predict``, ``/models``, ops);
- :func:`v2_json`: the Open Inference Protocol's ``{"error": "..."}`` under ``/v2``, whose
  status is :func:`v2_status` (the protocol answers a bad request with 400, never 422);
- :func:`cli_line`: one line for the offline scoring command.

:func:`render` picks the HTTP format from the path; Flask's handlers here and
the WSGI middleware (:mod:`serving.guard`) both call it. Bad input never becomes
a 500 and no response ever carries a stack trace: HTTP errors from routing
(404, 405, 413) are converted here, and anything unexpected becomes a generic
500 carrying only the request id (the traceback goes to the log).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from serving.observability import REQUEST_ID_KEY

#: Set on the WSGI environ when a request is answered with an error: its type slug (the access
#: log and the tests read the decision from it, whatever the door's wire format).
ERROR_SLUG_KEY = "dlqr.error_type"

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

#: slug -> (title, explanation shown on /docs)
PROBLEM_TYPES: dict[str, tuple[str, str]] = {
    "malformed-json": ("Malformed JSON", "The body is not valid JSON (400)."),
    "bad-request": ("Bad request", "The request cannot be read, e.g. an empty body (400)."),
    "not-found": ("Not found", "No such route (404)."),
    "unknown-model": ("Unknown model", "No model of that name is served; GET /models lists them (404)."),
    "unknown-version": ("Unknown version", "The model has no such version directory (404); see /models."),
    "method-not-allowed": ("Method not allowed", "See the Allow header (405)."),
    "payload-too-large": ("Payload too large", "The body exceeds DLQR_MAX_BODY_BYTES (413)."),
    "batch-too-large": ("Batch too large", "More instances than DLQR_MAX_BATCH (413)."),
    "unsupported-media-type": (
        "Unsupported media type",
        "Send application/json, or a raw body of a media type the model lists in /models (e.g. image/png for digit) (415).",
    ),
    "validation-error": (
        "Validation error",
        "The JSON is well formed but a value breaks the schema: see errors[].loc / msg (422). "
        "NaN and Infinity are refused.",
    ),
    "not-ready": (
        "Model not ready",
        "The model is loading or failed verification/self-test; see detail (503).",
    ),
    "internal-error": (
        "Internal server error",
        "Unexpected failure; quote the request_id when reporting it (500).",
    ),
    # answered by serving/guard.py and serving/workers.py, below the app
    "malformed-request": (
        "Malformed request",
        "The HTTP framing cannot be read: request line, a header or the chunked body (400). "
        "The connection is closed.",
    ),
    "request-timeout": (
        "Request timeout",
        "The request head, or then its body, did not arrive within DLQR_READ_TIMEOUT seconds (408). "
        "The connection is closed.",
    ),
    "uri-too-long": ("URI too long", "The request line is longer than Gunicorn's limit (414)."),
    "headers-too-large": ("Header fields too large", "Too many header fields, or one too long (431)."),
    "unsupported-encoding": (
        "Unsupported content encoding",
        "The body is compressed (Content-Encoding other than identity), declares a charset other "
        "than UTF-8, or starts with a byte-order mark: send plain UTF-8 JSON (415).",
    ),
    "request-too-expensive": (
        "Request too expensive",
        "The images in one request decode to more pixels than DLQR_MAX_REQUEST_PIXELS, counted over "
        "all instances from the image headers before any decoding; split the batch (413).",
    ),
    "overloaded": (
        "Overloaded",
        "This worker already has DLQR_MAX_INFLIGHT requests in work; retry after Retry-After seconds (503).",
    ),
    "deadline-exceeded": (
        "Deadline exceeded",
        "The request could not be answered within DLQR_REQUEST_TIMEOUT seconds: 503 when it waited "
        "that long for a worker, 504 when the work itself took that long (also after a worker timeout).",
    ),
    "queue-deadline-exceeded": (
        "Deadline passed while queued",
        "The request's DLQR_REQUEST_TIMEOUT deadline passed while it waited for a batched model run "
        "(adaptive batching); it was not run (504).",
    ),
    "http-error": ("HTTP error", "Another HTTP-level error (4xx/5xx)."),
}


def problem_statuses() -> dict[int, list[str]]:
    """HTTP status -> the problem slugs answered with it, read from the table's texts.

    Every explanation states its status codes in parentheses (e.g. "(503)"); a test keeps that
    true, so the OpenAPI document lists every status the server can answer without a second list.
    """
    out: dict[int, list[str]] = {}
    for slug, (_, text) in PROBLEM_TYPES.items():
        for code in re.findall(r"\b([45]\d\d)\b", text):
            out.setdefault(int(code), []).append(slug)
    return dict(sorted(out.items()))


def problem_type(slug: str) -> str:
    """The ``type`` URI reference of a problem: an anchor on the docs page."""
    return f"/docs#problem-{slug}"


class ServingError(Exception):
    """A refusal: HTTP ``status``, type ``slug`` (a key of :data:`PROBLEM_TYPES`) and ``detail``.

    ``errors`` lists field errors (problem+json only), ``headers`` are sent with the answer
    (``Retry-After``, ``Allow``), ``extra`` adds members to the problem body, and ``close``
    asks the server to close the connection (the body or its framing is unknown).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        close: bool = False,
    ):
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}
        self.close = close

    def __repr__(self) -> str:
        return f"ServingError({self.status}, {self.slug!r}, {self.detail!r})"


def problem_json(
    status: int,
    slug: str,
    detail: str,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The problem+json body; usable outside Flask (serving.guard answers below the app)."""
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": PROBLEM_TYPES.get(slug, PROBLEM_TYPES["http-error"])[0],
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id,
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


def v2_status(status: int) -> int:
    """The Open Inference Protocol's status for a decision: a request the schema refuses is 400."""
    return 400 if status == 422 else status


def v2_json(err: ServingError) -> bytes:
    """The Open Inference Protocol's error body: ``{"error": detail}``."""
    return json.dumps({"error": err.detail}, separators=(",", ":")).encode()


def cli_line(err: ServingError, where: str | None = None) -> str:
    """One line for the offline command: ``where: detail`` (the slug stays in the Result)."""
    return f"{where}: {err.detail}" if where else err.detail


def is_v2_path(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def render(
    err: ServingError, path: str, request_id: str | None
) -> tuple[int, str, bytes, list[tuple[str, str]]]:
    """``(status, content type, body, headers)`` of an error answered on ``path``, outside Flask too."""
    headers = list(err.headers.items())
    if is_v2_path(path):
        return v2_status(err.status), "application/json", v2_json(err), headers
    body = problem_json(err.status, err.slug, err.detail, instance=path or None, request_id=request_id,
                        errors=err.errors, extra=err.extra)  # fmt: skip
    return err.status, PROBLEM_CONTENT_TYPE, body, headers


def error_response(err: ServingError) -> Response:
    """Flask response for ``err`` in the current request's wire format."""
    request.environ[ERROR_SLUG_KEY] = err.slug
    status, ctype, body, headers = render(err, request.path, request.environ.get(REQUEST_ID_KEY))
    resp = Response(body, status=status, content_type=ctype)
    for key, value in headers:
        resp.headers[key] = value
    return resp


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """Build the error response (request id included when known)."""
    return error_response(ServingError(status, slug, detail, errors=errors, headers=headers, extra=extra))


#: ``app.extensions`` key of an optional ``allowed(path) -> "GET, HEAD"`` for 405 answers.
ALLOWED_METHODS_KEY = "dlqr_allowed_methods"

_HTTP_SLUGS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        return _unexpected(exc)
    headers = {}
    if status == 405:
        allow = dict(exc.get_headers()).get("Allow")
        allowed = current_app.extensions.get(ALLOWED_METHODS_KEY)
        if allowed is not None:  # a door that knows its own routes better (serving.v2)
            allow = allowed(request.path) or allow
        if allow:
            headers["Allow"] = allow
        detail = f"{request.method} is not allowed on {request.path}; allowed: {allow or 'none'}"
    elif status == 404:
        detail = f"no route {request.path}; see /openapi.json or /docs"
    elif status == 413:
        settings = current_app.config.get("DLQR_SETTINGS")
        limit = settings.max_body_bytes if settings is not None else None
        detail = "request body too large" + (
            f" (limit {limit:,} bytes, DLQR_MAX_BODY_BYTES)" if limit else ""
        )
    else:
        detail = exc.description or exc.name
    return problem_response(status, _HTTP_SLUGS.get(status, "http-error"), detail, headers=headers)


def _unexpected(exc: BaseException) -> Response:
    log.error(
        "unhandled error %s",
        type(exc).__name__,
        exc_info=exc,
        extra={
            "event": "unhandled_error",
            "request_id": request.environ.get(REQUEST_ID_KEY),
            "path": request.path,
        },
    )
    return problem_response(
        500,
        "internal-error",
        f"unexpected error; quote request id {request.environ.get(REQUEST_ID_KEY)} when reporting it",
    )


def init_app(app: Flask) -> None:
    """Register the handlers (most specific first)."""
    app.register_error_handler(ServingError, error_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
