"""Hardening middleware: framing, encodings, body deadline, overload shedding, request deadline, drain.

One WSGI middleware between :mod:`serving.observability` (outside: request id,
access log, ``dlqr_http_requests_total``) and Flask (inside), so every answer it
gives is a counted, logged RFC 9457 problem (on ``/v2`` paths the Open Inference
Protocol's ``{"error": ...}`` body instead, see :mod:`serving.v2`). In order, per request:

1. **Errors found below the app.** The worker classes in :mod:`serving.workers`
   turn what Gunicorn's parser refuses (bad request line or header, 414, 431, a
   request head that took longer than ``DLQR_READ_TIMEOUT``, a worker timeout)
   into a synthetic request carrying ``dlqr.protocol_error``; it is answered
   here, so it is counted and logged like any other answer.
2. **Drain.** After SIGTERM (:func:`serving.workers.start_draining`) ``/readyz`` answers 503.
3. **Encodings.** A ``Content-Encoding`` other than identity, or a ``charset``
   other than UTF-8, is 415 before the body is read.
4. **Body.** The whole body is read here, at most ``DLQR_MAX_BODY_BYTES`` (413),
   within ``DLQR_READ_TIMEOUT`` seconds in all (408: a slow client cannot hold a
   worker's work slot), and malformed chunked framing is 400 (Gunicorn raises
   it while the app reads, which used to surface as a 500 with a traceback).
   A JSON body starting with a byte-order mark or in UTF-16/32 is 415. The app
   then reads the body from memory (``CONTENT_LENGTH`` is set).
5. **Admission.** POST requests take one of ``DLQR_MAX_INFLIGHT`` work slots per
   worker or get 503 + Retry-After (``dlqr_http_requests_rejected_total{reason="overload"}``).
   Under gevent the request then yields once, so that requests already
   received queue up behind each other and are counted in flight (CPU-bound
   work never yields by itself, so without this the count would stay at 1).
   GETs (probes, metrics, docs) are cheap and never shed, so saturated workers
   do not fail their liveness probe.
6. **Deadline.** ``DLQR_REQUEST_TIMEOUT`` seconds from here: a request still
   queued at its deadline gets 503; one whose work overruns it (checked at
   every image and after the app returns) gets 504. A worker timeout raised
   while the app runs (:class:`serving.workers.WorkerAborted`) gets 504 as well.
7. **Budget.** A :class:`serving.budget.RequestBudget` (decoded pixels and the
   deadline) is active while the app runs; under gevent, every charge (one per
   image) also yields, so a long request does not stall the worker's probes.

Errors that leave the body unread, or the framing unknown, also close the
connection (through the worker's ``dlqr.close_connection`` callback).
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.http import parse_options_header

from serving import budget, workers
from serving.errors import ERROR_SLUG_KEY, ServingError, render
from serving.metrics import PREFIX
from serving.observability import REQUEST_ID_KEY
from serving.workers import CLOSE_KEY, PROTOCOL_ERROR_KEY, WorkerAborted, status_line

log = logging.getLogger(__name__)

RETRY_AFTER = "1"
_READ_CHUNK = 64 * 1024
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_BOMS = (b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe")


class ReadTimeout(Exception):
    """The body did not arrive within DLQR_READ_TIMEOUT."""


def _refusal(status: int, slug: str, detail: str, close: bool = True) -> ServingError:
    """A refusal below the app; by default the connection closes (the body is left unread)."""
    return ServingError(status, slug, detail, close=close)


def _gevent_active() -> bool:
    """True in a gevent worker: its sockets are patched (which imported gevent.monkey first).

    Looked up, not imported: importing gevent.monkey just to ask costs 26-43 ms in a sync or
    gthread worker and in-process.
    """
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


class Guard:
    """The middleware; ``registry`` is the app's Prometheus registry (None in multi-process mode)."""

    def __init__(self, app: Callable, settings: Any, registry: Any = None):
        self.app = app
        self.max_body = settings.max_body_bytes
        self.read_timeout = float(settings.read_timeout)
        self.request_timeout = float(settings.request_timeout)
        self.max_inflight = settings.max_inflight
        self.max_pixels = settings.max_request_pixels
        self.inflight = 0
        self._lock = threading.Lock()
        self.gevent = _gevent_active()
        self._pause = None
        if self.gevent:
            import gevent

            self._pause = partial(gevent.sleep, 0)
        from prometheus_client import Counter, Gauge

        reg = {"registry": registry}
        self.inflight_gauge = Gauge(
            PREFIX + "http_requests_in_flight",
            "POST requests holding a work slot (DLQR_MAX_INFLIGHT per worker), summed over workers.",
            multiprocess_mode="livesum",
            **reg,
        )
        self.rejected = Counter(
            PREFIX + "http_requests_rejected",
            "Requests refused to protect the service: overload (503), deadline (503/504), "
            "read_timeout (408), worker_timeout (504).",
            ["reason"],
            **reg,
        )
        self._rejected = {
            r: self.rejected.labels(r) for r in ("overload", "deadline", "read_timeout", "worker_timeout")
        }
        for child in self._rejected.values():
            child.inc(0)

    # ------------------------------------------------------------------ answers

    def _answer(
        self,
        environ: dict,
        start_response: Callable,
        status: int,
        slug: str,
        detail: str,
        *,
        close: bool = False,
        headers: list[tuple[str, str]] | None = None,
    ) -> list[bytes]:
        # The same renderer as the app's error handlers: problem+json, or {"error"} under /v2.
        environ[ERROR_SLUG_KEY] = slug
        code, ctype, body, _ = render(
            ServingError(status, slug, detail), environ.get("PATH_INFO") or "", environ.get(REQUEST_ID_KEY)
        )
        if close:
            closer = environ.get(CLOSE_KEY)
            if closer is not None:
                closer()
        start_response(
            status_line(code),
            [("Content-Type", ctype), ("Content-Length", str(len(body))), *(headers or [])],
        )
        return [body]

    # -------------------------------------------------------------------- body

    def _check_head(self, environ: dict) -> None:
        encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding and encoding != "identity":
            raise _refusal(
                415,
                "unsupported-encoding",
                f"Content-Encoding {encoding!r} is not accepted; send the body uncompressed",
            )
        ctype = environ.get("CONTENT_TYPE", "")
        if "charset" in ctype.lower():
            charset = parse_options_header(ctype)[1].get("charset", "").strip().lower()
            if charset and charset not in _UTF8:
                raise _refusal(
                    415, "unsupported-encoding", f"charset {charset!r} is not accepted; send UTF-8"
                )

    def _read_body(self, environ: dict) -> bytes:
        raw_length = environ.get("CONTENT_LENGTH", "").strip()
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked and (not raw_length or raw_length == "0"):
            return b""
        length = None
        if not chunked:
            try:
                length = int(raw_length)
            except ValueError:  # Gunicorn validates it; other servers might not
                raise _refusal(400, "malformed-request", "Content-Length is not a number") from None
            if length > self.max_body:
                raise _refusal(413, "payload-too-large", self._too_large())
        stream = environ["wsgi.input"]
        want = self.max_body + 1 if length is None else length
        if self.gevent:
            import gevent

            # One deadline for the whole body; each recv is also bounded by the socket timeout.
            with gevent.Timeout(self.read_timeout, ReadTimeout):
                return self._read(stream, want, length)
        return self._read(stream, want, length, time.monotonic() + self.read_timeout)

    def _read(self, stream: Any, want: int, length: int | None, deadline: float | None = None) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < want:
            chunk = stream.read(min(_READ_CHUNK, want - got))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
            if deadline is not None and time.monotonic() > deadline:
                raise ReadTimeout()
        if length is not None and got < length:
            raise _refusal(400, "malformed-request", f"the body ended after {got} of {length} bytes")
        if length is None and got > self.max_body:
            raise _refusal(413, "payload-too-large", self._too_large())
        return b"".join(parts)

    def _too_large(self) -> str:
        return f"request body too large (limit {self.max_body:,} bytes, DLQR_MAX_BODY_BYTES)"

    @staticmethod
    def _check_text(environ: dict, body: bytes) -> None:
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if not (mimetype == "application/json" or mimetype.endswith("+json")):
            return
        if body.startswith(_BOMS) or (len(body) >= 2 and (body[0] == 0 or body[1] == 0)):
            raise _refusal(
                415,
                "unsupported-encoding",
                "the JSON body starts with a byte-order mark or is UTF-16/32; send UTF-8 without a BOM",
                close=False,
            )

    # -------------------------------------------------------------------- call

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        t0 = time.monotonic()
        err = environ.get(PROTOCOL_ERROR_KEY)
        if err is not None:
            status, slug, detail = err
            if status == 408:
                self._rejected["read_timeout"].inc()
            elif status == 504:
                self._rejected["worker_timeout"].inc()
            return self._answer(environ, start_response, status, slug, detail, close=True)
        if workers.draining() and environ.get("PATH_INFO") == "/readyz":
            return self._answer(
                environ, start_response, 503, "not-ready", "draining: the server is shutting down"
            )
        try:
            self._check_head(environ)
            body = self._read_body(environ)
            if body:
                self._check_text(environ, body)
        except ServingError as exc:
            return self._answer(environ, start_response, exc.status, exc.slug, exc.detail, close=exc.close)
        except ReadTimeout:
            self._rejected["read_timeout"].inc()
            return self._answer(
                environ, start_response, 408, "request-timeout",
                f"the request body did not arrive within {self.read_timeout:g} s (DLQR_READ_TIMEOUT)",
                close=True,
            )  # fmt: skip
        except TimeoutError:  # a single recv stalled past the socket timeout
            self._rejected["read_timeout"].inc()
            return self._answer(
                environ, start_response, 408, "request-timeout", "the request body stalled", close=True
            )
        except (ParseException, NoMoreData, ConnectionError) as exc:
            detail = str(exc) or type(exc).__name__
            return self._answer(
                environ,
                start_response,
                400,
                "malformed-request",
                f"the request body cannot be read: {detail}",
                close=True,
            )
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        if environ.get("REQUEST_METHOD") != "POST":
            return self._call(environ, start_response, t0)
        with self._lock:
            admitted = self.inflight < self.max_inflight
            if admitted:
                self.inflight += 1
        if not admitted:
            self._rejected["overload"].inc()
            return self._answer(
                environ, start_response, 503, "overloaded",
                f"this worker already has {self.max_inflight} requests in work (DLQR_MAX_INFLIGHT); retry shortly",
                headers=[("Retry-After", RETRY_AFTER)],
            )  # fmt: skip
        self.inflight_gauge.inc()
        try:
            if self.gevent:
                import gevent

                gevent.sleep(0)  # queue behind the requests already received (see the module doc)
            if time.monotonic() - t0 > self.request_timeout:
                self._rejected["deadline"].inc()
                return self._answer(
                    environ, start_response, 503, "deadline-exceeded",
                    f"the request waited {self.request_timeout:g} s (DLQR_REQUEST_TIMEOUT) for a worker; retry shortly",
                    headers=[("Retry-After", RETRY_AFTER)],
                )  # fmt: skip
            return self._call(environ, start_response, t0)
        finally:
            with self._lock:
                self.inflight -= 1
            self.inflight_gauge.dec()

    def _call(self, environ: dict, start_response: Callable, t0: float) -> Iterable[bytes]:
        """Run the app under the request budget; hold its start_response until the deadline check."""
        held: list[Any] = []

        def hold(status: str, headers: list, exc_info: Any = None) -> Callable:
            held[:] = [status, headers, exc_info]
            return _no_write

        request_budget = budget.RequestBudget(
            self.max_pixels, self.request_timeout, start=t0, pause=self._pause
        )
        try:
            with budget.active(request_budget):
                result = self.app(environ, hold)
        except WorkerAborted:
            self._rejected["worker_timeout"].inc()
            log.error(
                "worker timeout while serving %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"),
                extra={"event": "worker_timeout", "request_id": environ.get(REQUEST_ID_KEY)},
            )  # fmt: skip
            return self._answer(
                environ, start_response, 504, "deadline-exceeded",
                "the worker timed out on this request (DLQR_TIMEOUT) and is being replaced",
                close=True,
            )  # fmt: skip
        if request_budget.expired() and held:
            self._rejected["deadline"].inc()
            if held[0].startswith("504"):  # the app noticed (serving.budget.DeadlineExceeded)
                start_response(*held)
                return result
            if hasattr(result, "close"):
                result.close()
            return self._answer(
                environ, start_response, 504, "deadline-exceeded",
                f"the request took longer than {self.request_timeout:g} s (DLQR_REQUEST_TIMEOUT)",
            )  # fmt: skip
        if held:
            start_response(*held)
        return result


def _no_write(data: bytes) -> None:
    raise RuntimeError("the WSGI write() callable is not supported; return the body instead")


def init_app(app: Any, settings: Any, registry: Any = None) -> Guard:
    """Wrap ``app.wsgi_app``; call before serving.api.init_app so observability stays outside."""
    guard = Guard(app.wsgi_app, settings, registry)
    app.wsgi_app = guard
    app.extensions["dlqr_guard"] = guard
    return guard
