"""Payload log: sampled requests and answers as rotated JSONL files.

Off by default (``DLQR_PAYLOAD_LOG_ENABLED``). An observer of the data plane
(:meth:`serving.dataplane.DataPlane.add_observer`): it runs on the observers'
background thread, samples ``DLQR_PAYLOAD_LOG_SAMPLE`` of the answered requests
and hands each line to a bounded queue of its own, which a writer thread drains
into ``DLQR_PAYLOAD_LOG_DIR/payload-<hostname>-<pid>.jsonl``. So a slow or full
disk never blocks or fails a request, nor delays the drift monitor: a line that
finds the queue full, or whose write fails (ENOSPC on a full tmpfs), is dropped
and counted in ``dlqr_payload_log_dropped_total{reason}``.

Rotation is the standard library's :class:`logging.handlers.RotatingFileHandler`
(``.jsonl``, ``.jsonl.1``, ... up to ``DLQR_PAYLOAD_LOG_MAX_FILES`` files of at
most ``DLQR_PAYLOAD_LOG_MAX_BYTES`` each, per process). The host name and pid in
the file name keep every worker and replica in files of its own;
``python -m serving monitor report`` merges them.

One line::

    {"time": "2026-12-04T10:00:00.123Z", "request_id": "...", "model": "wine",
     "version": "2026.11.27.184954", "door": "predict", "latency_ms": 1.9,
     "inputs": [{"fixed_acidity": 7.0, ...}], "outputs": [[0.12]],
     "predictions": [{"alcohol": 10.6}]}

Inputs are the card's JSON instances (what a client would POST). A card field
listed in ``DLQR_PAYLOAD_LOG_REDACT`` is replaced by ``"sha256:<hex>"`` (hash:
equal values stay joinable) or left out (drop).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import logging.handlers
import os
import queue
import random
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ACTIONS = ("hash", "drop")
FILE_PREFIX = "payload-"
FILE_SUFFIX = ".jsonl"


class RedactError(ValueError):
    """A malformed ``DLQR_PAYLOAD_LOG_REDACT``."""


def parse_redact(spec: str, models: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """``"wine:ph=hash,*:pixels=drop"`` -> ``{("wine", "ph"): "hash", ("*", "pixels"): "drop"}``.

    ``models`` maps served model names to their cards; a field must be one the card's
    instances have (its features, or a named input such as ``pixels``).
    """
    out: dict[tuple[str, str], str] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        try:
            target, action = (s.strip() for s in item.split("=", 1))
            model, fld = (s.strip() for s in target.split(":", 1))
        except ValueError:
            raise RedactError(f"{item!r}: expected MODEL:FIELD=hash|drop") from None
        if action not in ACTIONS:
            raise RedactError(f"{item!r}: the action must be one of {', '.join(ACTIONS)}")
        if model != "*" and model not in models:
            raise RedactError(f"{item!r}: no served model {model!r}")
        out[(model, fld)] = action
    return out


def hash_value(value: Any) -> str:
    """A stable digest of a JSON value (equal values give equal digests)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def redact_instance(
    instance: dict[str, Any], model: str, rules: Mapping[tuple[str, str], str]
) -> dict[str, Any]:
    """Apply the redaction rules of ``model`` (and ``*``) to one JSON instance."""
    if not rules:
        return instance
    out = {}
    for k, v in instance.items():
        action = rules.get((model, k)) or rules.get(("*", k))
        if action == "drop":
            continue
        out[k] = hash_value(v) if action == "hash" else v
    return out


def file_stem(hostname: str | None = None, pid: int | None = None) -> str:
    """``payload-<hostname>-<pid>``: one set of files per process, whatever the replica."""
    host = (hostname or socket.gethostname()).replace("/", "_") or "host"
    return f"{FILE_PREFIX}{host}-{pid if pid is not None else os.getpid()}"


def native_queue(maxsize: int) -> queue.Queue:
    """A queue a real thread can block on.

    The gevent worker patches ``queue`` but not ``threading`` (serving/workers.py): the
    writer is a real OS thread, and a gevent queue would raise ``LoopExit`` in it.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("queue") and not monkey.is_module_patched("threading"):
        return monkey.get_original("queue", "Queue")(maxsize)
    return queue.Queue(maxsize)


class _Handler(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler that counts a failed write instead of printing a traceback."""

    def __init__(self, *args: Any, on_error: Callable[[], None], **kw: Any):
        self._on_error = on_error
        super().__init__(*args, **kw)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self._on_error()


class PayloadLog:
    """The observer; see the module docstring."""

    def __init__(
        self,
        directory: Path | str,
        cards: Mapping[str, Any],
        *,
        sample: float = 1.0,
        max_bytes: int = 64 * 1024 * 1024,
        max_files: int = 10,
        queue_size: int = 10_000,
        redact: Mapping[tuple[str, str], str] | None = None,
        metrics: Any = None,
        hostname: str | None = None,
        start: bool = True,
        rng: random.Random | None = None,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cards = cards
        self.sample = sample
        self.redact = dict(redact or {})
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.path = self.directory / (file_stem(hostname) + FILE_SUFFIX)
        self.written = 0
        self.dropped = {"queue_full": 0, "write_error": 0}
        self._failed = False
        self._handler = _Handler(
            self.path, maxBytes=max_bytes, backupCount=max_files - 1, encoding="utf-8", delay=True,
            on_error=self._write_failed,
        )  # fmt: skip
        self._queue: queue.Queue[str | None] = native_queue(queue_size)
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ---------------------------------------------------------------- observer

    def __call__(self, obs: Any) -> None:
        """Sample one answered prediction and queue its line; never blocks."""
        if self.sample < 1.0 and self.rng.random() >= self.sample:
            return
        try:
            self._queue.put_nowait(self.line(obs))
        except queue.Full:
            self._drop("queue_full")

    def line(self, obs: Any) -> str:
        """One JSON line for an observation."""
        card = self.cards[obs.model]
        rows = np.asarray(obs.rows)
        features = getattr(card, "features", None)
        inputs = [redact_instance(card.instance_from_row(r, features), obs.model, self.redact) for r in rows]
        now = dt.datetime.now(dt.UTC)
        rec = {
            "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "request_id": obs.request_id,
            "model": obs.model,
            "version": obs.version,
            "door": obs.door,
            "latency_ms": round(obs.latency_seconds * 1000, 3),
            "inputs": inputs,
            "outputs": np.asarray(obs.outputs, dtype=np.float64).tolist(),
            "predictions": obs.predictions,
        }
        return json.dumps(rec, separators=(",", ":"), allow_nan=False)

    # ------------------------------------------------------------------ writer

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dlqr-payload-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            text = self._queue.get()
            try:
                if text is None:
                    return
                self.write(text)
            finally:
                self._queue.task_done()

    def write(self, text: str) -> None:
        """Write one line now (rotating first if it would overflow the file)."""
        self._failed = False
        record = logging.LogRecord("dlqr.payload", logging.INFO, "", 0, text, None, None)
        self._handler.handle(record)  # calls handleError (counted) on an OSError
        if not self._failed:
            try:
                self._handler.flush()  # a full disk shows here with buffered writes
            except OSError:
                self._write_failed()
        if not self._failed:
            self.written += 1
            if self.metrics is not None:
                self.metrics.written.inc()

    def _write_failed(self) -> None:
        self._failed = True
        self._drop("write_error")

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        if self.metrics is not None:
            self.metrics.dropped.labels(reason).inc()

    def join(self) -> None:
        """Wait until every queued line was written or dropped (tests, shutdown)."""
        self._queue.join()

    def close(self) -> None:
        self.join()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(5)
        # What a full disk still holds in the buffer is lost (already counted).
        with contextlib.suppress(OSError):
            self._handler.close()


class PayloadMetrics:
    """``dlqr_payload_log_written_total`` and ``dlqr_payload_log_dropped_total{reason}``."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter

        from serving.metrics import PREFIX

        self.written = Counter(
            PREFIX + "payload_log_written", "Payload log lines written.", registry=registry
        )
        self.dropped = Counter(
            PREFIX + "payload_log_dropped",
            "Payload log lines dropped: queue_full (the writer is behind) or write_error (e.g. a full disk).",
            ["reason"],
            registry=registry,
        )
        for reason in ("queue_full", "write_error"):
            self.dropped.labels(reason)


def init_app(
    app: Any, settings: Any, metrics: Any, cards: Mapping[str, Any], plane: Any
) -> PayloadLog | None:
    """Register the payload log as a data-plane observer when ``DLQR_PAYLOAD_LOG_ENABLED``."""
    if not settings.payload_log_enabled:
        return None
    from serving.settings import SettingsError

    if not settings.payload_log_dir:
        raise SettingsError("DLQR_PAYLOAD_LOG_ENABLED=true needs DLQR_PAYLOAD_LOG_DIR (a writable directory)")
    try:
        rules = parse_redact(settings.payload_log_redact, cards)
        plog = PayloadLog(
            settings.payload_log_dir,
            cards,
            sample=settings.payload_log_sample,
            max_bytes=settings.payload_log_max_bytes,
            max_files=settings.payload_log_max_files,
            queue_size=settings.payload_log_queue,
            redact=rules,
            metrics=PayloadMetrics(metrics.registry),
        )
    except RedactError as exc:
        raise SettingsError(f"DLQR_PAYLOAD_LOG_REDACT: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"DLQR_PAYLOAD_LOG_DIR={settings.payload_log_dir!r}: {exc}") from None
    plane.add_observer(plog)
    app.extensions["dlqr_payload_log"] = plog
    return plog
