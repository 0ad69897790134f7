"""Integration: the real Gunicorn server, started as `make serve` does, on a free loopback port.

Uses the committed bundles in artifacts/ (tiny generated ones when the repo has none yet),
two sync workers and a private Prometheus multi-process directory. Covers every endpoint and
error class over real HTTP, metrics aggregated across workers, workers that load before they
accept, no TensorFlow or Keras in a ready worker, a tampered model.onnx, fail-fast settings
and a clean Ctrl-C.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dlqr import repository
from tests.conftest import REPO_ROOT
from tests.serving import bundles

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START_TIMEOUT = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def post(port: int, path: str, obj, ctype: str = "application/json", **headers) -> tuple[int, dict, bytes]:
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return call(port, "POST", path, body, {"Content-Type": ctype, **headers})


class Server:
    """A Gunicorn process with its log file; `lines()` parses its JSON log."""

    def __init__(
        self,
        tmp: Path,
        artifacts: Path,
        workers: int = 2,
        env: dict | None = None,
        prom_dir: Path | None = None,
        config: str = "serving/gunicorn.conf.py",
    ):
        self.port = free_port()
        self.config = config
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        self.env = {
            **os.environ,
            "DLQR_ARTIFACTS_DIR": str(artifacts),
            "DLQR_BIND": f"127.0.0.1:{self.port}",
            "DLQR_WORKERS": str(workers),
            "DLQR_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if prom_dir is not None:
            self.env["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
        self.workers = workers
        # (t, /readyz status, /healthz status, {model: status} from the /readyz body)
        self.startup: list[tuple[float, int, int, dict[str, str]]] = []
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True) -> Server:
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.t0 = time.monotonic()
        # Exactly the `make serve` command line (run from the repo root).
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", self.config, "serving.wsgi:app"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait_ready:
            self.wait_ready()
        return self

    def poll_startup(self) -> None:
        """Record /readyz and /healthz from the moment the port opens until every worker is ready."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited early ({self.proc.returncode}):\n{self.log()}")
            try:
                ready, _, body = call(self.port, "GET", "/readyz", timeout=5)
                health = call(self.port, "GET", "/healthz", timeout=5)[0]
                models = {n: m["status"] for n, m in json.loads(body).get("models", {}).items()}
                self.startup.append((time.monotonic() - self.t0, ready, health, models))
            except OSError:
                time.sleep(0.05)
                continue
            if ready == 200:  # /readyz must only say 200 once *every* worker can serve
                return
            time.sleep(0.05)
        raise AssertionError(f"not ready after {START_TIMEOUT}s:\n{self.log()}")

    def wait_ready(self) -> None:
        self.poll_startup()

    def ready_pids(self) -> set[int]:
        return {r["pid"] for r in self.lines() if r.get("event") == "ready"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[dict]:
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc


def committed_or_tiny(tmp: Path) -> Path:
    """The repo's committed bundles when all three exist, else freshly built tiny ones."""
    real = REPO_ROOT / "artifacts"
    if all(repository.latest_dir(real / n) is not None for n in bundles.MODEL_NAMES):
        return real
    return bundles.write_all(tmp / "artifacts")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gunicorn")
    srv = Server(
        tmp,
        committed_or_tiny(tmp),
        workers=2,
        prom_dir=tmp / "prom",
        env={"DLQR_MAX_BATCH": "64", "DLQR_MAX_BODY_BYTES": "300000"},
    )
    try:
        srv.start()
        # Right after the first 200 from /readyz, every worker must already serve
        # (each call is a new connection, so both workers take some).
        instance = json.loads((REPO_ROOT / "examples" / "wine.json").read_text())
        srv.after_ready = [post(srv.port, "/predict/wine", instance)[0] for _ in range(16)]
        yield srv
    finally:
        srv.stop()


def golden_inputs(artifacts: Path, name: str) -> list[dict]:
    return [
        g["input"]
        for g in json.loads(
            ((repository.latest_dir(artifacts / name) or artifacts / name) / "manifest.json").read_text()
        )["golden"]
    ]


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------------- tests


def test_workers_load_before_they_accept(server):
    assert server.after_ready == [200] * 16, "a worker answered 503 after /readyz said ready"
    assert server.startup, "no /readyz answer recorded"
    # A worker verifies, loads and self-tests its models before it takes its first connection:
    # no answer ever comes from a worker whose models are still pending or loading.
    seen = {status for *_, models in server.startup for status in models.values()}
    assert seen == {"ready"}, f"a worker answered while loading: {server.startup[:5]}"
    assert all(health == 200 for _, _, health, _ in server.startup)
    # /readyz may still say 503 while the *other* worker loads, never 200 before both are ready.
    assert server.startup[-1][1] == 200
    body = json.loads(call(server.port, "GET", "/readyz")[2])
    assert body["status"] == "ready"
    for _ in range(50):  # the "ready" log line may trail the gauge update by a moment
        if len(server.ready_pids()) == 2:
            break
        time.sleep(0.1)
    assert len(server.ready_pids()) == 2  # each worker loaded and self-tested its own models
    loads = [r for r in server.lines() if r.get("event") == "model_ready"]
    assert {(r["pid"], r["model"]) for r in loads} == {
        (p, m) for p in server.ready_pids() for m in ("wine", "seizure", "digit")
    }
    master = [r for r in server.lines() if r.get("event") == "app_created"]
    assert len(master) == 2  # the app (and the models) only ever loaded in workers
    app_pids = {r["pid"] for r in master}
    assert app_pids == server.ready_pids() and server.proc.pid not in app_pids
    assert all(r["model_loading"] == "sync" for r in master)


def test_ready_workers_have_no_tensorflow_or_keras(tmp_path):
    """Each worker, once ready, has imported ONNX Runtime and neither TensorFlow nor Keras."""
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    srv = Server(
        tmp_path,
        committed_or_tiny(tmp_path),
        workers=2,
        env={"DLQR_TEST_PROBE_DIR": str(probe_dir)},
        config="tests/serving/gunicorn_probe.conf.py",
    )
    try:
        srv.start()
        deadline = time.monotonic() + 30  # /readyz turns 200 once the gauges say so: the hook may trail
        while len(list(probe_dir.glob("*.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        reports = [json.loads(p.read_text()) for p in sorted(probe_dir.glob("*.json"))]
        assert len(reports) == 2, srv.log()
        for report in reports:
            pid, modules = report["pid"], set(report["modules"])
            assert {
                r["model"] for r in srv.lines() if r.get("pid") == pid and r.get("event") == "model_ready"
            } == {
                "wine",
                "seizure",
                "digit",
            }, f"probe ran in worker {pid} before its models were ready"
            # the probe saw a real, loaded worker
            assert {"onnxruntime", "serving.registry", "serving.wsgi", "dlqr.cards.digit"} <= modules
            heavy = sorted(
                m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tf2onnx")
            )
            assert not heavy, f"worker {pid} imported {heavy[:5]}"
            # and no TensorFlow shared library is mapped into the process either
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "onnxruntime" in maps
            for lib in (
                "libtensorflow",
                "_pywrap_tensorflow",
                "site-packages/tensorflow/",
                "site-packages/keras/",
            ):
                assert lib not in maps, f"worker {pid} maps {lib}"
        rss = [int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{r['pid']}/status").read_text()).group(1))
               for r in reports]  # fmt: skip
        assert max(rss) < 400 * 1024, f"worker RSS {rss} kB: TensorFlow-sized"
    finally:
        srv.stop()


def test_every_endpoint(server):
    art = Path(server.env["DLQR_ARTIFACTS_DIR"])
    for path, ctype in (
        ("/healthz", "application/json"),
        ("/readyz", "application/json"),
        ("/models", "application/json"),
        ("/models/digit", "application/json"),
        ("/openapi.json", "application/json"),
        ("/docs", "text/html"),
        ("/metrics", "text/plain"),
    ):
        status, headers, body = call(server.port, "GET", path)
        assert status == 200 and headers["content-type"].startswith(ctype), (path, status, body[:200])
        assert headers["x-request-id"]
    for name in ("wine", "seizure", "digit"):
        inputs = golden_inputs(art, name)
        status, headers, body = post(
            server.port, f"/predict/{name}", {"instances": inputs}, **{"X-Request-ID": f"it-{name}"}
        )
        assert status == 200, body
        out = json.loads(body)
        assert out["model"] == name and len(out["predictions"]) == len(inputs)
        assert headers["x-request-id"] == f"it-{name}"
    examples = REPO_ROOT / "examples"
    if art == REPO_ROOT / "artifacts" and (examples / "digit.png").is_file():
        # The README's curl commands: the shipped examples against the shipped bundles.
        for fname, name in (
            ("wine.json", "wine"),
            ("seizure.json", "seizure"),
            ("digit.json", "digit"),
            ("wine_batch.json", "wine"),
            ("seizure_batch.json", "seizure"),
            ("digit_batch.json", "digit"),
        ):
            status, _, body = post(server.port, f"/predict/{name}", (examples / fname).read_bytes())
            assert status == 200, (fname, body)
        status, _, body = post(
            server.port, "/predict/digit", (examples / "digit.png").read_bytes(), "image/png"
        )
        assert status == 200 and json.loads(body)["predictions"][0]["digit"] == 7
        seizure = json.loads(
            post(server.port, "/predict/seizure", (examples / "seizure_batch.json").read_bytes())[2]
        )
        assert [p["seizure"] for p in seizure["predictions"]] == [True, False]


def _problem(resp, status: int, slug: str) -> dict:
    code, headers, body = resp
    assert code == status, body
    assert headers["content-type"] == "application/problem+json"
    doc = json.loads(body)
    assert (
        doc["status"] == status
        and doc["type"].endswith(slug)
        and doc["request_id"] == headers["x-request-id"]
    )
    assert b"Traceback" not in body
    return doc


def test_every_error_class(server):
    p = server.port
    wine = golden_inputs(Path(server.env["DLQR_ARTIFACTS_DIR"]), "wine")[0]
    _problem(post(p, "/predict/wine", b'{"fixed_acidity": 1,'), 400, "malformed-json")
    _problem(post(p, "/predict/wine", b""), 400, "bad-request")
    _problem(post(p, "/predict/beer", wine), 404, "unknown-model")
    _problem(call(p, "GET", "/nope"), 404, "not-found")
    r = call(p, "PUT", "/predict/wine", b"{}", {"Content-Type": "application/json"})
    _problem(r, 405, "method-not-allowed")
    assert "POST" in r[1]["allow"]
    _problem(post(p, "/predict/wine", {"instances": [wine] * 65}), 413, "batch-too-large")
    _problem(post(p, "/predict/wine", b'{"pad": "' + b"x" * 300_001 + b'"}'), 413, "payload-too-large")
    _problem(post(p, "/predict/wine", json.dumps(wine).encode(), "text/plain"), 415, "unsupported-media-type")
    bad = json.dumps({**wine, "ph": 0}).replace('"ph": 0', '"ph": NaN').encode()
    doc = _problem(post(p, "/predict/wine", bad), 422, "validation-error")
    assert doc["errors"][0]["loc"] == ["ph"]
    doc = _problem(
        post(p, "/predict/wine", {"instances": [wine, wine, wine, {**wine, "density": 0}]}),
        422,
        "validation-error",
    )
    assert doc["errors"][0]["loc"] == ["instances", 3, "density"]


def test_chunked_body_over_the_limit_is_413(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        chunks = iter([b'{"pad": "', b"x" * 200_000, b"y" * 200_000, b'"}'])
        conn.request(
            "POST",
            "/predict/wine",
            body=chunks,
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        assert resp.status == 413 and resp.getheader("Content-Type") == "application/problem+json"
    finally:
        conn.close()


def test_metrics_are_aggregated_across_workers(server):
    p = server.port
    inst = golden_inputs(Path(server.env["DLQR_ARTIFACTS_DIR"]), "digit")[0]
    before = metric(call(p, "GET", "/metrics")[2].decode(), "dlqr_model_predictions_total", model="digit")
    n_threads, per_thread = 8, 25
    errors: list = []

    def worker(t: int) -> None:
        for i in range(per_thread):
            try:
                code = post(p, "/predict/digit", inst, **{"X-Request-ID": f"mw-{t}-{i}"})[0]
                if code != 200:
                    errors.append(code)
            except OSError as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    total = n_threads * per_thread
    time.sleep(0.5)  # let the access-log lines reach the file
    served_by = {r["pid"] for r in server.lines() if str(r.get("request_id", "")).startswith("mw-")}
    assert len(served_by) >= 2, f"expected both workers to serve, got pids {served_by}"
    # Every scrape, whichever worker answers it, sees all requests of all workers.
    seen = set()
    for _ in range(8):
        text = call(p, "GET", "/metrics")[2].decode()
        seen.add(metric(text, "dlqr_model_predictions_total", model="digit") - before)
    assert seen == {total}, f"scrapes disagree or miss requests: {seen} (expected {total})"
    text = call(p, "GET", "/metrics")[2].decode()
    assert metric(text, "dlqr_model_ready", model="digit") == 1
    assert metric(text, "dlqr_model_info", model="digit") == 1  # max over live workers: one series, value 1
    assert metric(text, "dlqr_http_request_duration_seconds_count", model="digit") >= total


@pytest.fixture
def tampered(tmp_path):
    art = committed_or_tiny(tmp_path)
    dest = tmp_path / "tampered"
    shutil.copytree(art, dest)
    # Every digit version (under the default 'latest' policy an older good one would be served).
    for onnx in sorted((dest / "digit").glob("**/model.onnx")):
        data = bytearray(onnx.read_bytes())
        data[len(data) // 2] ^= 0x01
        onnx.write_bytes(bytes(data))
    return dest


def test_tampered_bundle_is_refused_and_ctrl_c_stops_cleanly(tmp_path, tampered):
    srv = Server(tmp_path, tampered, workers=1)  # PROMETHEUS_MULTIPROC_DIR unset: a temp dir is made
    prom_dir = None
    try:
        srv.start(wait_ready=False)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not any(r.get("event") == "model_refused" for r in srv.lines()):
            assert srv.proc.poll() is None, srv.log()
            time.sleep(0.2)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:  # wait for the other two models to finish loading
            body = json.loads(call(srv.port, "GET", "/readyz")[2])
            if all(m["status"] in ("ready", "failed") for m in body["models"].values()):
                break
            time.sleep(0.2)
        doc = _problem(call(srv.port, "GET", "/readyz"), 503, "not-ready")
        assert doc["models"]["digit"]["status"] == "failed"
        assert "sha256 mismatch for model.onnx" in doc["detail"]
        assert doc["models"]["wine"]["status"] == "ready"
        refused = [r for r in srv.lines() if r.get("event") == "model_refused"]
        assert refused[0]["level"] == "ERROR" and refused[0]["file"].endswith("model.onnx")
        assert "/digit/" in refused[0]["file"]
        _problem(post(srv.port, "/predict/digit", {"pixels": [0] * 784}), 503, "not-ready")
        assert post(srv.port, "/predict/seizure", {"eeg": [0] * 178})[0] == 200
        text = call(srv.port, "GET", "/metrics")[2].decode()
        assert (
            metric(text, "dlqr_model_ready", model="digit") == 0
            and metric(text, "dlqr_model_ready", model="wine") == 1
        )
        prom_dir = re.search(r'prometheus_dir=([^\s"]+)', srv.log()).group(1)
        assert Path(prom_dir).is_dir()
    finally:
        rc = srv.stop(signal.SIGINT)  # what Ctrl-C sends
    assert rc == 0, srv.log()
    assert not Path(prom_dir).exists(), "the temporary metrics dir must be removed on exit"
    assert "Traceback" not in srv.log()


def test_sigterm_workers_exit_cleanly_not_by_a_signal(tmp_path):
    """Each worker leaves by itself on SIGTERM; none dies of a signal at interpreter exit.

    Caught once: ONNX Runtime imported in the master before fork made every worker abort
    (SIGABRT) while exiting, after its last answer, so nothing but this log line showed it.
    """
    srv = Server(tmp_path, committed_or_tiny(tmp_path), workers=2)
    try:
        srv.start()
        instance = json.loads((REPO_ROOT / "examples" / "wine.json").read_text())
        assert all(post(srv.port, "/predict/wine", instance)[0] == 200 for _ in range(8))
    finally:
        rc = srv.stop(signal.SIGTERM)
    log = srv.log()
    assert rc == 0, log
    assert log.count("Worker exiting") == 2, log
    assert "was sent SIG" not in log and "Traceback" not in log, log


def test_invalid_setting_stops_the_master_with_one_clear_line(tmp_path):
    srv = Server(tmp_path, tmp_path, env={"DLQR_WORKERS": "two"})
    srv.start(wait_ready=False)
    try:
        rc = srv.proc.wait(60)
    finally:
        srv.stop()
    assert rc == 2
    assert "invalid setting: DLQR_WORKERS='two': must be an integer" in srv.log()
    assert "Traceback" not in srv.log()
    assert len(srv.log().strip().splitlines()) == 1  # one line, from the master, before it binds


def test_unknown_model_name_stops_the_master_with_one_clear_line(tmp_path):
    srv = Server(tmp_path, committed_or_tiny(tmp_path), env={"DLQR_MODELS": "wine,nope"})
    srv.start(wait_ready=False)
    try:
        rc = srv.proc.wait(60)
    finally:
        srv.stop()
    assert rc == 2
    log = srv.log()
    assert (
        "invalid setting: DLQR_MODELS='wine,nope': no model card named 'nope' (registered: wine, seizure, digit)"
        in log
    )
    assert "Traceback" not in log and "Booting worker" not in log  # refused before any worker starts
    assert len(log.strip().splitlines()) == 1


def test_models_setting_serves_only_those(tmp_path):
    srv = Server(tmp_path, committed_or_tiny(tmp_path), workers=1, env={"DLQR_MODELS": "digit"})
    try:
        srv.start()
        body = json.loads(call(srv.port, "GET", "/readyz")[2])
        assert list(body["models"]) == ["digit"]
        assert post(srv.port, "/predict/digit", {"pixels": [0] * 784})[0] == 200
        _problem(post(srv.port, "/predict/wine", {}), 404, "unknown-model")
    finally:
        srv.stop()
