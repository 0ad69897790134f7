"""Structured JSON logs: one object per line on stderr.

The app writes one ``request`` line per HTTP request (request id, model,
status, latency, batch size), and model-loading events with the file a
refused bundle failed on. Gunicorn's own messages use the same formatter
(see ``gunicorn.conf.py``), so a log shipper parses one format.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sys
import time
from typing import Any

#: LogRecord attributes that are not user fields.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """Format a record as one JSON object; ``extra=`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class StderrHandler(logging.Handler):
    """Write to whatever ``sys.stderr`` is at emit time (test capture, Gunicorn's redirect)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never break a request
            self.handleError(record)


def configure(level: str = "INFO") -> logging.Logger:
    """Attach one JSON stderr handler to the ``serving`` logger tree (idempotent)."""
    logger = logging.getLogger("serving")
    logger.setLevel(level)
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(JSONFormatter())
        logger.addHandler(handler)
    # Our lines are complete JSON objects; don't let a root handler print them twice.
    logger.propagate = False
    return logger


def _gunicorn_logger_base():
    from gunicorn.glogging import Logger

    return Logger


class GunicornLogger(_gunicorn_logger_base()):
    """Gunicorn's logger with its error log in our JSON format (``logger_class`` in the config).

    Chosen over ``logconfig_dict``, which would also switch on Gunicorn's own access log
    (a second, slower line per request next to the app's ``request`` line).
    """

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JSONFormatter())


class AccessLog:
    """The per-request line, written without the logging machinery.

    ``logging`` (record, filters, handler locks, formatter) costs more than the
    whole NumPy forward pass of a small model, so the access line is built
    directly in the same JSON shape as :class:`JSONFormatter` output and written
    with one ``write`` (atomic for lines under PIPE_BUF, so workers don't interleave).
    Enabled when the ``serving.access`` logger is enabled for INFO.
    """

    def __init__(self, name: str = "serving.access"):
        self.name = name
        self.enabled = logging.getLogger(name).isEnabledFor(logging.INFO)
        self._second = -1
        self._prefix = ""

    def write(
        self,
        request_id: str,
        method: str,
        path: str,
        endpoint: str,
        model: str | None,
        status: int,
        latency_ms: float,
        batch_size: int | None,
    ) -> None:
        """Write one ``request`` line (same keys and order as a JSONFormatter record)."""
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once per second, not per request
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        # Only path, method and endpoint can carry client-chosen characters: JSON-escape them;
        # the request id is already restricted to [A-Za-z0-9._:/+=@-] by the API.
        line = (
            f'{{"ts":"{self._prefix}.{int((now - second) * 1000):03d}Z","level":"INFO","logger":"{self.name}",'
            f'"pid":{os.getpid()},"msg":"request","event":"request","request_id":"{request_id}",'
            f'"method":{_js(method)},"path":{_js(path)},"endpoint":{_js(endpoint)},'
            f'"model":{_js(model) if model else "null"},"status":{int(status)},"latency_ms":{latency_ms:.3f},'
            f'"batch_size":{"null" if batch_size is None else int(batch_size)}}}\n'
        )
        with contextlib.suppress(Exception):  # a full disk or closed pipe must not fail the request
            sys.stderr.write(line)


_js = json.encoder.encode_basestring_ascii  # C-implemented JSON string literal (quotes included)
