#!/usr/bin/env python3
"""Container health check: exit 0 iff the local server's GET /readyz answers 200.

Used by Dockerfile.serve's HEALTHCHECK (the slim image has no curl). The port
comes from DLQR_BIND, the same variable Gunicorn binds from, so the check
follows the server when the port is changed. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def readyz_url(bind: str) -> str:
    """The loopback /readyz URL for a Gunicorn bind string such as ``0.0.0.0:8000``."""
    first = bind.split(",")[0].strip()
    if first.startswith("unix:"):
        raise ValueError(f"cannot health-check a unix socket bind ({first})")
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"DLQR_BIND {bind!r} is not HOST:PORT")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        # A wildcard bind is reachable on loopback from inside the container.
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/readyz"


def main() -> int:
    """Probe /readyz once; print why on failure (Docker keeps it in `docker inspect`)."""
    try:
        url = readyz_url(os.environ.get("DLQR_BIND", "127.0.0.1:8000"))
    except ValueError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    timeout = float(os.environ.get("DLQR_HEALTHCHECK_TIMEOUT", "3"))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        print(f"healthcheck: {url} -> HTTP {exc.code}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"healthcheck: {url} -> {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url} -> HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
