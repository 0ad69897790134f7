"""The buffering proxy: Debian's nginx on loopback, with deploy/nginx's template, in front of the real server.

Checks that predictions (JSON and a raw PNG) pass through with their request
id, that the proxy's own refusals are problem+json, and that slow clients are
cut off by nginx while predictions keep flowing. Skips with the reason when
nginx is not installed (``scripts/install_nginx.sh``; .ci/run installs it).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.reliability.conftest import chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
TEMPLATE = REPO_ROOT / "deploy" / "nginx" / "dlqr.conf.template"


def render(template: str, **values: str) -> str:
    """What the nginx image's envsubst does: only the named ${VARS}; nginx's own $vars stay."""
    for key, value in values.items():
        template = template.replace("${" + key + "}", value)
    return template


@pytest.fixture(scope="module")
def proxy(server, tmp_path_factory):
    if NGINX is None:
        pytest.skip("Debian's nginx is not installed (run scripts/install_nginx.sh as root; .ci/run does)")
    tmp = tmp_path_factory.mktemp("nginx")
    (tmp / "temp").mkdir()
    (tmp / "temp").chmod(0o777)  # nginx's workers may run as an unprivileged user
    port = chaos.free_port()
    (tmp / "dlqr.conf").write_text(
        render(
            TEMPLATE.read_text(),
            DLQR_UPSTREAM=f"127.0.0.1:{server.port}",
            NGINX_PORT=f"127.0.0.1:{port}",
            NGINX_TEMP=str(tmp / "temp"),
        )
    )
    (tmp / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log info;\n"
        f"events {{ worker_connections 512; }}\n"
        f"http {{ access_log off; include {tmp}/dlqr.conf; }}\n"
    )
    check = subprocess.run([NGINX, "-t", "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while chaos.request(port, "GET", "/healthz", timeout=2).status != 200:
        assert proc.poll() is None and time.monotonic() < deadline, (tmp / "error.log").read_text()
        time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(20)


def test_predictions_pass_through_the_proxy(proxy, server):
    for name in ("wine", "seizure", "digit"):
        body = chaos.example(f"{name}_batch.json")
        direct = chaos.request(server.port, "POST", f"/predict/{name}", body, chaos.JSON)
        via = chaos.request(
            proxy, "POST", f"/predict/{name}", body, {**chaos.JSON, "X-Request-ID": f"px-{name}"}
        )
        assert via.status == 200 and json.loads(via.body) == json.loads(direct.body)
        assert via.headers["x-request-id"] == f"px-{name}"
    png = (REPO_ROOT / "examples" / "digit.png").read_bytes()
    r = chaos.request(proxy, "POST", "/predict/digit", png, {"Content-Type": "image/png"})
    assert r.status == 200 and json.loads(r.body)["predictions"][0]["digit"] == 7
    # The service's own refusals pass through unchanged.
    r = chaos.request(proxy, "POST", "/predict/wine", b"{", chaos.JSON)
    assert r.status == 400 and r.problem and json.loads(r.body)["type"] == "/docs#problem-malformed-json"


def test_the_proxy_refuses_with_problem_json(proxy):
    r = chaos.request(proxy, "POST", "/predict/wine", b"x" * (9 * 1024 * 1024), chaos.JSON, timeout=30)
    assert r.status == 413 and r.problem, (r.status, r.headers)
    assert json.loads(r.body)["type"] == "/docs#problem-payload-too-large"
    out = chaos.raw_exchange(
        proxy, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    )
    assert chaos.status_lines(out) in ([431], [400]) and b"application/problem+json" in out


def _slow_head(port: int, out: dict) -> None:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            for byte in b"POST /predict/wine HTTP/1.1\r\nHost: x\r\n":
                s.send(bytes([byte]))
                time.sleep(1.0)
        except OSError:
            pass
        s.settimeout(30)
        try:
            out["head"] = (s.recv(1024), round(time.monotonic() - t0, 1))
        except OSError as exc:
            out["head"] = (repr(exc).encode(), round(time.monotonic() - t0, 1))


def _stalled_body(port: int, out: dict) -> None:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /predict/wine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{")  # fmt: skip
        try:
            out["body"] = (s.recv(1024), round(time.monotonic() - t0, 1))
        except OSError as exc:
            out["body"] = (repr(exc).encode(), round(time.monotonic() - t0, 1))


def test_slow_clients_are_cut_off_by_the_proxy(proxy):
    out: dict = {}
    slow = [threading.Thread(target=f, args=(proxy, out)) for f in (_slow_head, _stalled_body)]
    for t in slow:
        t.start()
    wine = chaos.example("wine.json")
    answers = []
    while any(t.is_alive() for t in slow):
        answers.append(chaos.request(proxy, "POST", "/predict/wine", wine, chaos.JSON, timeout=5).status)
        time.sleep(0.2)
    for t in slow:
        t.join()
    print("slow clients through nginx:", out, f"predictions meanwhile: {len(answers)}")
    assert answers and set(answers) == {200}
    # client_header_timeout / client_body_timeout are 5 s: nginx drops them (closing, or with 408).
    for kind, (data, seconds) in out.items():
        assert 4 <= seconds <= 12, (kind, seconds)
        assert data == b"" or data.startswith(b"HTTP/1.1 408") or b"Reset" in data, (kind, data[:200])
