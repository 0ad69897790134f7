"""Adaptive batching in a real Gunicorn with gevent workers (the default worker class).

A malformed request among 32 concurrent ones gets its own 4xx while the other 31 get the answers
they get alone; a request whose deadline passes while it is queued behind a long model run gets
504 and never reaches the model; at c=32 the model runs hold more than one request on average.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import pytest

from tests.serving.test_gunicorn import Server, committed_or_tiny, golden_inputs, metric, post

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gunicorn-batching")
    srv = Server(tmp, committed_or_tiny(tmp), workers=2, prom_dir=tmp / "prom",
                 env={"DLQR_WORKER_CLASS": "gevent"})  # fmt: skip
    try:
        yield srv.start()
    finally:
        srv.stop()


def digit_instances(srv: Server, n: int) -> list[dict]:
    """n distinct valid digit instances: the golden inputs, with one pixel changed per copy."""
    base = golden_inputs(Path(srv.env["DLQR_ARTIFACTS_DIR"]), "digit")
    out = []
    for i in range(n):
        inst = json.loads(json.dumps(base[i % len(base)]))
        set_pixel(inst, 14 * 28 + i % 28, (37 * i) % 256)
        out.append(inst)
    return out


def set_pixel(inst: dict, k: int, value: int) -> None:
    """Set pixel k (row-major) of an instance whose pixels are 28 rows of 28 or 784 in one list."""
    pixels = inst["pixels"]
    if isinstance(pixels[0], list):
        pixels[k // 28][k % 28] = value
    else:
        pixels[k] = value


def concurrently(port: int, bodies: list[bytes]) -> list[tuple[int, dict]]:
    """POST every body to /predict/digit at once (one thread and connection each)."""
    start = threading.Barrier(len(bodies))
    out: list = [None] * len(bodies)

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.connect()
            start.wait()
            conn.request(
                "POST", "/predict/digit", body=bodies[i], headers={"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            out[i] = (resp.status, json.loads(resp.read()), resp.getheader("Content-Type"))
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def batch_totals(srv: Server) -> dict[str, float]:
    text = _get(srv.port, "/metrics")
    return {
        key: metric(text, f"dlqr_model_batch_{key}", model="digit")
        for key in ("rows_sum", "rows_count", "requests_sum", "requests_count", "queue_wait_seconds_count")
    }


def _get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_one_malformed_request_among_32_gets_its_4xx_and_the_others_their_own_answers(server):
    instances = digit_instances(server, N)
    alone = []  # one at a time: every request runs alone
    for inst in instances:
        status, _, body = post(server.port, "/predict/digit", inst)
        assert status == 200
        alone.append(json.loads(body)["predictions"])
    bodies = [json.dumps(inst).encode() for inst in instances]
    bad = 13
    malformed = json.loads(bodies[bad])
    set_pixel(malformed, 100, 300)  # above 255: the schema refuses it
    bodies[bad] = json.dumps(malformed).encode()
    before = batch_totals(server)
    got = concurrently(server.port, bodies)
    after = batch_totals(server)
    status, body, ctype = got[bad]
    assert status == 422 and ctype == "application/problem+json" and body["type"].endswith("validation-error")
    for i, (status, body, _) in enumerate(got):
        if i != bad:
            assert status == 200, body
            assert body["predictions"] == alone[i]
    assert after["requests_sum"] - before["requests_sum"] == N - 1  # the bad one never queued


def test_at_c32_model_runs_hold_more_than_one_request_on_average(server):
    bodies = [json.dumps(inst).encode() for inst in digit_instances(server, N)]
    before = batch_totals(server)
    stop = time.monotonic() + 4.0
    codes: list[int] = []
    lock = threading.Lock()

    def client(body: bytes) -> None:  # keep-alive connection, requests back to back, as hey does
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            while time.monotonic() < stop:
                conn.request(
                    "POST", "/predict/digit", body=body, headers={"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                resp.read()
                with lock:
                    codes.append(resp.status)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = batch_totals(server)
    runs = after["requests_count"] - before["requests_count"]
    requests = after["requests_sum"] - before["requests_sum"]
    rows = after["rows_sum"] - before["rows_sum"]
    mean = requests / runs
    print(f"c={N}: {requests:.0f} requests in {runs:.0f} model runs, mean {mean:.2f} requests "
          f"/ {rows / runs:.2f} rows per run")  # fmt: skip
    assert set(codes) == {200} and requests == len(codes)
    assert after["queue_wait_seconds_count"] - before["queue_wait_seconds_count"] == requests
    assert mean > 1.0


@pytest.fixture
def slow_server(tmp_path):
    """One gevent worker whose 7-row model runs take 3 s longer; each run's row count is logged."""
    runs = tmp_path / "runs"
    runs.mkdir()
    srv = Server(
        tmp_path, committed_or_tiny(tmp_path), workers=1,
        config="tests/serving/gunicorn_slow_model.conf.py",
        env={"DLQR_WORKER_CLASS": "gevent", "DLQR_REQUEST_TIMEOUT": "1", "DLQR_TEST_SLOW_ROWS": "7",
             "DLQR_TEST_SLOW_SECONDS": "3", "DLQR_TEST_RUNS_DIR": str(runs)},
    )  # fmt: skip
    try:
        yield srv.start(), runs
    finally:
        srv.stop()


def test_a_request_whose_deadline_passes_while_queued_gets_504_and_never_runs(slow_server):
    srv, runs = slow_server
    inst = digit_instances(srv, 1)[0]
    for f in runs.iterdir():  # forget the runs made before the test (none expected)
        f.unlink()
    long_one: list = []
    t = threading.Thread(
        target=lambda: long_one.append(post(srv.port, "/predict/digit", {"instances": [inst] * 7}))
    )
    t.start()
    deadline = time.monotonic() + 10
    while not any(f.read_text().split() == ["7"] for f in runs.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)  # until the 7-row run has started
    t0 = time.monotonic()
    status, headers, body = post(srv.port, "/predict/digit", inst)
    waited = time.monotonic() - t0
    t.join(30)
    problem = json.loads(body)
    assert status == 504 and headers["content-type"] == "application/problem+json", problem
    assert problem["type"].endswith("queue-deadline-exceeded") and "was not run" in problem["detail"]
    assert 0.9 < waited < 2.9  # answered at its own 1 s deadline, not after the long run
    ran = [int(n) for f in runs.iterdir() for n in f.read_text().split()]
    assert ran == [7]  # the expired request never reached the model
