"""serving.guard and serving.budget: encodings, body framing and deadline, overload, request deadline, drain.

The app-level tests go through the Flask test client (so the observability
middleware counts every answer); the timing and concurrency cases drive the
middleware directly with a stub app, which makes them deterministic.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData
from PIL import Image
from prometheus_client import CollectorRegistry

from dlqr import images
from dlqr.cards.wine import EXAMPLE
from serving import budget, workers
from serving.guard import Guard
from serving.observability import method_label
from tests.conftest import REPO_ROOT
from tests.serving.test_app import assert_problem, post_json

WINE = dict(EXAMPLE)  # a real row of the UCI table, the card's documented example


def counted(app, **labels) -> float:
    registry = app.extensions["dlqr_metrics"].registry
    name = labels.pop("name", "dlqr_http_requests_total")
    return sum(
        s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# -------------------------------------------------------------- encodings (415)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (gzip.compress(json.dumps(WINE).encode()), {"Content-Encoding": "gzip"}),
        (json.dumps(WINE).encode(), {"Content-Encoding": "br"}),
        (b"\xef\xbb\xbf" + json.dumps(WINE).encode(), {}),
        (json.dumps(WINE).encode("utf-16"), {}),  # with its BOM
        (json.dumps(WINE).encode("utf-16-le"), {}),  # without: NUL bytes
    ],
    ids=["gzip", "br", "utf8-bom", "utf16-bom", "utf16le"],
)
def test_compressed_or_non_utf8_bodies_are_415_and_counted(app, client, body, headers):
    before = counted(app, endpoint="/predict/wine", status="415")
    r = client.post("/predict/wine", data=body, content_type="application/json", headers=headers)
    assert_problem(r, 415, "unsupported-encoding")
    assert counted(app, endpoint="/predict/wine", status="415") == before + 1


@pytest.mark.parametrize("charset", ["utf-16", "latin-1", "UTF-32"])
def test_a_charset_other_than_utf8_is_415(client, charset):
    r = post_json(client, "/predict/wine", WINE, content_type=f"application/json; charset={charset}")
    assert_problem(r, 415, "unsupported-encoding")


@pytest.mark.parametrize("ctype", ["application/json; charset=UTF-8", "application/json;charset=utf8"])
def test_utf8_charset_and_identity_encoding_are_fine(client, ctype):
    r = client.post(
        "/predict/wine", data=json.dumps(WINE), content_type=ctype, headers={"Content-Encoding": "identity"}
    )
    assert r.status_code == 200, r.data


# --------------------------------------------------------- the pixel budget (413)


def png(size: int) -> bytes:
    img = Image.new("L", (size, size), 255)
    img.paste(0, (size // 3, size // 8, size // 2, size * 7 // 8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def small_budget_app(artifacts):
    from serving.app import create_app

    return create_app({"ARTIFACTS_DIR": artifacts, "MODEL_LOADING": "sync", "MAX_REQUEST_PIXELS": 100_000})


def test_pixel_budget_counts_the_whole_request(small_budget_app, monkeypatch):
    c = small_budget_app.test_client()
    image = {"image": base64.b64encode(png(200)).decode()}  # 40,000 pixels
    assert post_json(c, "/predict/digit", {"instances": [image, image]}).status_code == 200  # 80,000
    decoded = []
    real = images._ink  # runs once per image, right after it is decoded
    monkeypatch.setattr(images, "_ink", lambda img: decoded.append(img.size) or real(img))
    body = assert_problem(
        post_json(c, "/predict/digit", {"instances": [image] * 3}), 413, "request-too-expensive"
    )
    assert "100,000" in body["detail"] and "DLQR_MAX_REQUEST_PIXELS" in body["detail"]
    assert len(decoded) == 2  # the third image was refused from its header, before decoding
    assert counted(small_budget_app, endpoint="/predict/digit", status="413") == 1


def test_pixel_budget_applies_to_raw_image_bodies(small_budget_app):
    c = small_budget_app.test_client()
    assert c.post("/predict/digit", data=png(400), content_type="image/png").status_code == 413
    assert c.post("/predict/digit", data=png(400), content_type="image/png").content_type == (
        "application/problem+json"
    )
    assert c.post("/predict/digit", data=png(200), content_type="image/png").status_code == 200


def test_budget_is_free_outside_a_request():
    budget.charge_pixels(10**12)  # no active budget: nothing to charge
    b = budget.RequestBudget(max_pixels=10, timeout=None)
    with budget.active(b):
        budget.charge_pixels(10)
        with pytest.raises(budget.BudgetExceeded):
            budget.charge_pixels(1)
    assert budget.current() is None


# ------------------------------------------------------------------ methods


def test_invented_methods_share_one_metric_label(app, client):
    before = counted(app, method="other")
    for i in range(20):
        client.open("/healthz", method=f"X{i:04d}")
    assert counted(app, method="other") == before + 20
    assert not any(
        s.labels.get("method", "").startswith("X")
        for m in app.extensions["dlqr_metrics"].registry.collect()
        for s in m.samples
    )
    assert [method_label(m) for m in ("GET", "PATCH", "get", "BREW")] == ["GET", "PATCH", "other", "other"]


# ------------------------------------------------- the middleware on its own


def settings(**kw):
    base = dict(
        max_body_bytes=1000,
        read_timeout=1,
        request_timeout=1,
        max_inflight=1,
        max_request_pixels=1000,
    )
    return SimpleNamespace(**{**base, **kw})


def call(guard: Guard, body=b"{}", method="POST", path="/predict/wine", **environ):
    closed = []
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)) if isinstance(body, bytes) else "",
        "wsgi.input": io.BytesIO(body) if isinstance(body, bytes) else body,
        workers.CLOSE_KEY: lambda: closed.append(True),
        **environ,
    }
    got = {}

    def start_response(status, headers, exc_info=None):
        got.update(status=int(status[:3]), headers=dict(headers))

    out = b"".join(guard(env, start_response))
    return got["status"], got["headers"], json.loads(out) if out.startswith(b"{") else out, bool(closed)


def ok_app(environ, start_response):
    data = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"] or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok:" + data]


def rejected(guard: Guard, reason: str) -> float:
    return guard.rejected.labels(reason)._value.get()


class Stalling:
    """A wsgi.input that gives one byte per read, ``delay`` s apart."""

    def __init__(self, data: bytes, delay: float):
        self.data, self.delay = data, delay

    def read(self, n: int = -1) -> bytes:
        time.sleep(self.delay)
        out, self.data = self.data[:1], self.data[1:]
        return out


class Raising:
    def __init__(self, exc: BaseException):
        self.exc = exc

    def read(self, n: int = -1) -> bytes:
        raise self.exc


def test_body_is_read_into_memory_and_chunked_framing_is_removed():
    g = Guard(ok_app, settings(), CollectorRegistry())
    status, _, body, closed = call(
        g, body=io.BytesIO(b'{"a":1}'), CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked"
    )
    assert (status, body, closed) == (200, b'ok:{"a":1}', False)


@pytest.mark.parametrize(
    "exc",
    [InvalidChunkSize(b"zz"), ChunkMissingTerminator(b"XY"), NoMoreData(b""), ConnectionResetError()],
    ids=["bad-size", "no-terminator", "client-gone", "reset"],
)
def test_malformed_framing_is_400_and_closes(exc):
    g = Guard(ok_app, settings(), CollectorRegistry())
    status, headers, body, closed = call(
        g, body=Raising(exc), CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked"
    )
    assert (status, body["type"], closed) == (400, "/docs#problem-malformed-request", True)
    assert headers["Content-Type"] == "application/problem+json"


def test_too_large_bodies_are_413_without_reading():
    g = Guard(ok_app, settings(), CollectorRegistry())
    status, _, body, closed = call(g, body=Raising(AssertionError("read")), CONTENT_LENGTH="5000")
    assert (status, body["type"], closed) == (413, "/docs#problem-payload-too-large", True)
    status, _, _, closed = call(
        g, body=io.BytesIO(b"x" * 1500), CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked"
    )
    assert (status, closed) == (413, True)


def test_a_slow_body_is_408_after_the_read_timeout():
    g = Guard(ok_app, settings(read_timeout=1), CollectorRegistry())
    t0 = time.monotonic()
    status, _, body, closed = call(g, body=Stalling(b"x" * 100, 0.4), CONTENT_LENGTH="100")
    assert (status, body["type"], closed) == (408, "/docs#problem-request-timeout", True)
    assert time.monotonic() - t0 < 2.5
    assert rejected(g, "read_timeout") == 1
    status, *_ = call(g, body=Raising(TimeoutError()), CONTENT_LENGTH="10")  # one recv stalled
    assert status == 408 and rejected(g, "read_timeout") == 2


def test_overload_is_shed_with_503_and_retry_after():
    release, entered = threading.Event(), threading.Event()

    def blocking_app(environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            entered.set()
            release.wait(10)
        start_response("200 OK", [])
        return [b"done"]

    g = Guard(blocking_app, settings(max_inflight=1), CollectorRegistry())
    first: list = []
    t = threading.Thread(target=lambda: first.append(call(g)))
    t.start()
    assert entered.wait(10)
    assert g.inflight_gauge._value.get() == 1
    status, headers, body, _ = call(g)
    assert (status, body["type"], headers["Retry-After"]) == (503, "/docs#problem-overloaded", "1")
    assert call(g, method="GET", path="/healthz", body=b"")[0] == 200  # probes are never shed
    release.set()
    t.join(10)
    assert first[0][0] == 200 and rejected(g, "overload") == 1
    assert g.inflight == 0 and g.inflight_gauge._value.get() == 0


def test_a_late_answer_becomes_504():
    def slow_app(environ, start_response):
        time.sleep(1.2)
        start_response("200 OK", [])
        return [b"late"]

    g = Guard(slow_app, settings(request_timeout=1), CollectorRegistry())
    status, _, body, _ = call(g)
    assert (status, body["type"]) == (504, "/docs#problem-deadline-exceeded")
    assert rejected(g, "deadline") == 1


def test_the_deadline_is_checked_at_every_budget_charge():
    def charging_app(environ, start_response):
        time.sleep(1.1)
        budget.charge_pixels(1)  # raises DeadlineExceeded (a ProblemError: Flask answers it)
        raise AssertionError("not reached")

    g = Guard(charging_app, settings(request_timeout=1), CollectorRegistry())
    with pytest.raises(budget.DeadlineExceeded) as exc:
        call(g)
    assert exc.value.status == 504


def test_a_worker_timeout_inside_the_app_is_answered_504():
    def hogging_app(environ, start_response):
        raise workers.WorkerAborted()

    g = Guard(hogging_app, settings(), CollectorRegistry())
    status, _, body, closed = call(g)
    assert (status, body["type"], closed) == (504, "/docs#problem-deadline-exceeded", True)
    assert rejected(g, "worker_timeout") == 1


def test_protocol_errors_from_the_worker_are_answered_here():
    g = Guard(ok_app, settings(), CollectorRegistry())
    status, _, body, closed = call(
        g,
        method="",
        path="",
        body=b"",
        **{workers.PROTOCOL_ERROR_KEY: (431, "headers-too-large", "too many")},
    )
    assert (status, body["type"], body["detail"], closed) == (
        431,
        "/docs#problem-headers-too-large",
        "too many",
        True,
    )


def test_readyz_is_503_once_draining(monkeypatch):
    g = Guard(ok_app, settings(), CollectorRegistry())
    assert call(g, method="GET", path="/readyz", body=b"")[0] == 200
    monkeypatch.setattr(workers, "_draining", False)
    workers.start_draining()
    status, _, body, _ = call(g, method="GET", path="/readyz", body=b"")
    assert (status, body["type"]) == (503, "/docs#problem-not-ready") and "draining" in body["detail"]
    assert call(g, method="GET", path="/healthz", body=b"")[0] == 200


@pytest.mark.parametrize(("patch", "want"), [(False, [False, False]), (True, [True, True])])
def test_gevent_is_detected_without_importing_it(patch, want):
    # A fresh interpreter: a sync/gthread worker (or in-process use) must not import gevent.monkey
    # just to ask; a gevent worker has patched sockets before the app is built.
    code = (
        (
            "from gevent import monkey; monkey.patch_all(thread=False, os=False, subprocess=False, signal=False); "
            if patch
            else ""
        )
        + "import json, sys; from serving.guard import _gevent_active; "
        "print(json.dumps([_gevent_active(), 'gevent.monkey' in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == want
