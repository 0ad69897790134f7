"""deploy/docker/healthcheck.py: the serving image's HEALTHCHECK command."""

from __future__ import annotations

import http.server
import importlib.util
import subprocess
import sys
import threading

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy.conftest import free_port

SCRIPT = REPO_ROOT / "deploy" / "docker" / "healthcheck.py"


def _module():
    spec = importlib.util.spec_from_file_location("dlqr_healthcheck", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("0.0.0.0:8000", "http://127.0.0.1:8000/readyz"),
        ("127.0.0.1:9001", "http://127.0.0.1:9001/readyz"),
        ("[::]:8000", "http://127.0.0.1:8000/readyz"),
        ("[::1]:8000", "http://[::1]:8000/readyz"),
        ("0.0.0.0:8000,unix:/tmp/x.sock", "http://127.0.0.1:8000/readyz"),
    ],
)
def test_readyz_url_follows_the_gunicorn_bind(bind, url):
    assert _module().readyz_url(bind) == url


@pytest.mark.parametrize("bind", ["unix:/run/app.sock", "localhost", "host:port"])
def test_readyz_url_rejects_binds_it_cannot_probe(bind):
    with pytest.raises(ValueError):
        _module().readyz_url(bind)


@pytest.fixture
def readyz_server():
    """A loopback server whose /readyz status the test sets."""
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = state["status"] if self.path == "/readyz" else 404
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], state
    server.shutdown()
    server.server_close()
    thread.join(5)


def _run(port: int) -> subprocess.CompletedProcess:
    env = {"DLQR_BIND": f"0.0.0.0:{port}", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)


def test_exit_status_follows_readyz(readyz_server):
    port, state = readyz_server
    assert _run(port).returncode == 0
    state["status"] = 503
    res = _run(port)
    assert res.returncode == 1 and "HTTP 503" in res.stderr


def test_fails_when_nothing_listens():
    res = _run(free_port())
    assert res.returncode == 1 and "/readyz" in res.stderr
