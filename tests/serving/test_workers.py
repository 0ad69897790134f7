"""serving.workers and the Gunicorn config: error mapping, worker classes, control socket.

The behaviour over real sockets (408 for slow heads, pipelining, the drain) is
covered by tests/reliability against a real server.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import types

import pytest
from gunicorn.http import errors as herr

from serving import workers
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    ("exc", "status", "slug"),
    [
        (herr.InvalidRequestLine("GARBAGE"), 400, "malformed-request"),
        (herr.InvalidHeader("bad"), 400, "malformed-request"),
        (herr.InvalidChunkSize(b"zz"), 400, "malformed-request"),
        (herr.UnsupportedTransferCoding("gzip"), 400, "malformed-request"),
        (herr.LimitRequestLine(9000, 4094), 414, "uri-too-long"),
        (herr.LimitRequestHeaders("too many"), 431, "headers-too-large"),
        (workers.HeadTimeout(), 408, "request-timeout"),
        (TimeoutError(), 408, "request-timeout"),
        (workers.WorkerAborted(), 504, "deadline-exceeded"),
        (SystemExit(1), 504, "deadline-exceeded"),
        (RuntimeError("boom"), 500, "internal-error"),
    ],
)
def test_gunicorn_errors_map_to_problems(exc, status, slug):
    got = workers.classify(exc)
    assert got[:2] == (status, slug) and got[2]
    if status == 500:
        assert "boom" not in got[2]  # nothing of an unexpected error reaches the client


def test_raw_error_response_is_well_formed():
    body = b'{"status":431}'
    raw = workers.ProblemWorkerMixin._raw_response(
        431, [("Content-Type", "application/problem+json"), ("Content-Length", "999")], body
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert "Connection: close" in lines and f"Content-Length: {len(body)}" in lines
    assert "Content-Length: 999" not in lines and rest == body


def _python(code: str, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def test_the_master_imports_no_app_code():
    # The master loads the worker class: Flask, NumPy and the app stay out of it.
    code = (
        "import sys, json; from gunicorn.util import load_class; "
        "[load_class(f'serving.workers.{c}') for c in ('SyncWorker', 'ThreadWorker', 'GeventWorker')]; "
        "print(json.dumps([m for m in ('flask', 'numpy', 'serving.app', 'prometheus_client') if m in sys.modules]))"
    )
    assert json.loads(_python(code)) == []


CONF = (
    "import json, runpy; ns = runpy.run_path('serving/gunicorn.conf.py'); ns['on_exit'](None); "
    "print(json.dumps({k: ns.get(k) for k in ('worker_class', 'worker_connections', 'pre_request', "
    "'control_socket_disable', 'control_socket')}))"
)


def test_gunicorn_config_defaults():
    conf = json.loads(
        _python(CONF, DLQR_CONTROL_SOCKET="", PROMETHEUS_MULTIPROC_DIR="", DLQR_PROMETHEUS_PREPARED="")
    )
    assert conf["worker_class"] == "serving.workers.GeventWorker" and conf["worker_connections"] == 1000
    assert conf["pre_request"] == "serving.workers.pre_request"
    # No control socket by default: Gunicorn's default path is shared by every server of a user.
    assert conf["control_socket_disable"] is True and conf["control_socket"] is None


def test_gunicorn_config_per_instance_control_socket_and_worker_class():
    conf = json.loads(
        _python(
            CONF,
            DLQR_CONTROL_SOCKET="/run/dlqr/a.ctl",
            DLQR_WORKER_CLASS="gthread",
            DLQR_THREADS="4",
            PROMETHEUS_MULTIPROC_DIR="",
            DLQR_PROMETHEUS_PREPARED="",
        )
    )
    assert conf["control_socket_disable"] is False and conf["control_socket"] == "/run/dlqr/a.ctl"
    assert conf["worker_class"] == "serving.workers.ThreadWorker"


# --------------------------------------------------------------- stop without resets

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="socket filters are Linux's")


def _listener() -> socket.socket:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    return lsock


def _handshake_completes(port: int) -> bool:
    # On loopback a handshake takes microseconds; a dropped SYN is resent only after 1 s.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
        return True
    except TimeoutError:
        return False


@linux_only
def test_refuse_new_handshakes_keeps_what_is_queued():
    with _listener() as lsock:
        port = lsock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as queued:
            queued.sendall(b"ping")
            assert workers.refuse_new_handshakes(lsock) is True
            assert not _handshake_completes(port)
            # The connection queued before is still there, request and all, and can be answered.
            conn, _ = lsock.accept()
            with conn:
                assert conn.recv(4) == b"ping"
                conn.sendall(b"pong")
            assert queued.recv(4) == b"pong"
            lsock.setblocking(False)
            with pytest.raises(BlockingIOError):  # and the dropped attempt never joined the queue
                lsock.accept()


def test_refuse_new_handshakes_leaves_unix_sockets_alone(tmp_path):
    with socket.socket(socket.AF_UNIX) as usock:
        usock.bind(str(tmp_path / "s"))
        usock.listen(1)
        assert workers.refuse_new_handshakes(usock) is False


class _Arbiter:
    """The attributes of gunicorn.arbiter.Arbiter that the stop hook reads; stop records the listener."""

    def __init__(self, lsock: socket.socket, reexec_pid=0, master_pid=0, systemd=False, reuse_port=False):
        self.LISTENERS = [lsock]
        self.reexec_pid, self.master_pid, self.systemd = reexec_pid, master_pid, systemd
        self.cfg = types.SimpleNamespace(reuse_port=reuse_port)
        self.log = logging.getLogger("test")
        self.stopped: list[tuple[bool, bool]] = []

    def stop(self, graceful=True):
        self.stopped.append((graceful, _handshake_completes(self.LISTENERS[0].getsockname()[1])))


@linux_only
@pytest.mark.parametrize(
    ("owner", "completes"),
    [
        ({}, False),  # the only holder of its listeners: new handshakes stop before Gunicorn's stop
        ({"reexec_pid": 4242}, True),  # an old master during USR2: the new one keeps listening
        ({"master_pid": 4242}, True),  # the new master while the old one lives
        ({"systemd": True}, True),  # systemd holds the socket for the next start
        ({"reuse_port": True}, True),
    ],
)
def test_arbiter_stop_refuses_new_handshakes_only_where_it_owns_the_listeners(owner, completes):
    with _listener() as lsock:
        arbiter = _Arbiter(lsock, **owner)
        workers.refuse_new_connections_on_stop(arbiter)
        arbiter.stop(False)
        assert arbiter.stopped == [(False, completes)]


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def test_lingering_close_lets_a_client_still_sending_read_its_answer():
    """The server answers before reading a large body, then closes: the client gets the answer
    and an orderly end, not a reset (what a bare close with unread data causes)."""
    import threading

    client, server = _tcp_pair()
    got: list = []

    def send_then_read():
        try:
            client.sendall(b"x" * 4_000_000)  # more than the socket buffers hold
            data = b""
            while chunk := client.recv(65536):
                data += chunk
            got.append(data)
        except OSError as exc:
            got.append(exc)
        finally:
            client.close()

    t = threading.Thread(target=send_then_read)
    t.start()
    server.sendall(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    workers.lingering_close(server, seconds=10, limit=8_000_000)
    server.close()
    t.join(10)
    assert got == [b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"]


def test_lingering_close_is_bounded_in_time():
    import time

    client, server = _tcp_pair()
    try:
        t0 = time.monotonic()
        workers.lingering_close(server, seconds=0.2)  # the client neither sends nor closes
        assert 0.15 < time.monotonic() - t0 < 2
    finally:
        server.close()
        client.close()
