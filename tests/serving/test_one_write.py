"""serving.workers.OneWriteResponse: head and body leave in one write; the bytes are Gunicorn's."""

from __future__ import annotations

import socket

import pytest
from gunicorn import http
from gunicorn.config import Config
from gunicorn.http import wsgi as gwsgi

from serving.workers import OneWriteResponse


class _CountingSocket:
    def __init__(self, sock: socket.socket):
        self.sock, self.writes = sock, []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def _answer(cls, body: list[bytes], method: str = "GET", status: str = "200 OK"):
    """Run a minimal WSGI answer through Gunicorn's create/start_response/write/close."""
    server, client = socket.socketpair()
    try:
        client.sendall(f"{method} /x HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        cfg = Config()
        req = next(http.get_parser(cfg, server, ("127.0.0.1", 1)))
        counting = _CountingSocket(server)
        orig = gwsgi.Response
        gwsgi.Response = cls
        try:
            resp, _ = gwsgi.create(req, counting, ("127.0.0.1", 1), ("127.0.0.1", 8000), cfg)
        finally:
            gwsgi.Response = orig
        length = str(sum(len(b) for b in body))
        resp.start_response(status, [("Content-Type", "application/json"), ("Content-Length", length)])
        for item in body:
            resp.write(item)
        resp.close()
        wire = b"".join(counting.writes)
        return counting.writes, wire
    finally:
        server.close()
        client.close()


def _without_date(wire: bytes) -> bytes:
    return b"\r\n".join(line for line in wire.split(b"\r\n") if not line.startswith(b"Date:"))


def test_one_write_for_a_small_answer_with_the_same_bytes():
    writes, wire = _answer(OneWriteResponse, [b'{"a":1}'])
    assert len(writes) == 1
    _, plain = _answer(gwsgi.Response, [b'{"a":1}'])
    assert _without_date(wire) == _without_date(plain)
    assert wire.startswith(b"HTTP/1.1 200 OK\r\n") and wire.endswith(b'\r\n\r\n{"a":1}')


@pytest.mark.parametrize(
    ("body", "method", "status"), [([], "GET", "204 No Content"), ([b"abc"], "HEAD", "200 OK")]
)
def test_head_still_leaves_without_body_bytes(body, method, status):
    writes, wire = _answer(OneWriteResponse, body, method=method, status=status)
    _, plain = _answer(gwsgi.Response, body, method=method, status=status)
    assert _without_date(wire) == _without_date(plain)
    assert wire.startswith(f"HTTP/1.1 {status}".encode()) and wire.endswith(b"\r\n\r\n")


def test_several_body_items_follow_the_head():
    writes, wire = _answer(OneWriteResponse, [b"ab", b"cd"])
    assert len(writes) == 2 and wire.endswith(b"\r\n\r\nabcd")
