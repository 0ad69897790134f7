"""Where a person can reach the server: the URL of its ``/docs`` page from the Gunicorn bind."""

from __future__ import annotations


def docs_url(bind: str) -> str | None:
    """``http://HOST:PORT/docs`` for a ``HOST:PORT`` bind; None for a unix socket.

    A wildcard bind (``0.0.0.0``, ``[::]``) listens on every interface: the URL names the
    loopback one, which works from the machine that started the server.
    """
    if bind.startswith("unix:"):
        return None
    host, _, port = bind.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"http://{host}:{port}/docs"
