"""Service settings from ``DLQR_*`` environment variables, validated once at start.

Both the Gunicorn config (bind, workers, timeouts) and the app factory (artifacts
dir, limits, log level) read the same :class:`Settings`, so a typo such as
``DLQR_WORKERS=two`` stops the server at start with one clear line instead of
surfacing later as a confusing runtime error. Standard library only: the
Gunicorn master imports this before anything heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "DLQR_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
WORKER_CLASSES = ("gevent", "gthread", "sync")  # issue 8: serving/workers.py


class SettingsError(ValueError):
    """An environment setting is malformed or out of range."""


def default_artifacts_dir() -> Path:
    """The repo's ``artifacts/`` beside the package, else ``./artifacts``.

    The package-relative path works for a checkout or an editable install (and the
    container's WORKDIR); a non-editable install should set ``DLQR_ARTIFACTS_DIR``.
    """
    beside_package = Path(__file__).resolve().parents[1] / "artifacts"
    if beside_package.is_dir():
        return beside_package
    return Path.cwd() / "artifacts"


@dataclass(frozen=True)
class Settings:
    """Validated service settings; build with :meth:`from_env`."""

    artifacts_dir: Path = field(default_factory=default_artifacts_dir)
    max_batch: int = 256
    max_body_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    log_level: str = "INFO"
    bind: str = "127.0.0.1:8000"
    workers: int = 2
    threads: int = 1
    timeout: int = 30
    graceful_timeout: int = 20
    keepalive: int = 2
    # --- issue 8, production hardening (serving/guard.py, serving/workers.py; README "Hardening") ---
    worker_class: str = "gevent"  # gevent | gthread | sync: see serving/workers.py
    worker_connections: int = 1000  # gevent: open connections per worker (idle keep-alive included)
    read_timeout: int = 5  # s to send the request head, and again the body; slower clients get 408
    request_timeout: int = 10  # s from head read to answer; past it 503 (queued) or 504 (working)
    max_inflight: int = 32  # requests in work per worker; more are shed with 503 + Retry-After
    max_request_pixels: int = 4096 * 4096  # decoded image pixels per request, all instances (~1 s of CPU)
    control_socket: str = ""  # Gunicorn control socket path; empty: no socket
    # --- end issue 8 ---

    def __post_init__(self) -> None:
        _check_int("DLQR_MAX_BATCH", self.max_batch, 1, 100_000)
        _check_int("DLQR_MAX_BODY_BYTES", self.max_body_bytes, 1024, 1 << 30)
        _check_int("DLQR_MAX_IMAGE_PIXELS", self.max_image_pixels, 28 * 28, 1 << 28)
        _check_int("DLQR_WORKERS", self.workers, 1, 256)
        _check_int("DLQR_THREADS", self.threads, 1, 256)
        _check_int("DLQR_TIMEOUT", self.timeout, 1, 3600)
        _check_int("DLQR_GRACEFUL_TIMEOUT", self.graceful_timeout, 0, 3600)
        _check_int("DLQR_KEEPALIVE", self.keepalive, 0, 3600)
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"DLQR_LOG_LEVEL={self.log_level!r}: must be one of {', '.join(LOG_LEVELS)}")
        _check_bind(self.bind)
        # --- issue 8 ---
        if self.worker_class not in WORKER_CLASSES:
            raise SettingsError(
                f"DLQR_WORKER_CLASS={self.worker_class!r}: must be one of {', '.join(WORKER_CLASSES)}"
            )
        if self.threads > 1 and self.worker_class != "gthread":
            raise SettingsError(f"DLQR_THREADS={self.threads}: only DLQR_WORKER_CLASS=gthread uses threads")
        _check_int("DLQR_WORKER_CONNECTIONS", self.worker_connections, 1, 100_000)
        _check_int("DLQR_READ_TIMEOUT", self.read_timeout, 1, 3600)
        _check_int("DLQR_REQUEST_TIMEOUT", self.request_timeout, 1, 3600)
        _check_int("DLQR_MAX_INFLIGHT", self.max_inflight, 1, 100_000)
        _check_int("DLQR_MAX_REQUEST_PIXELS", self.max_request_pixels, 28 * 28, 1 << 32)
        if self.request_timeout >= self.timeout:
            raise SettingsError(
                f"DLQR_REQUEST_TIMEOUT={self.request_timeout} must be below DLQR_TIMEOUT={self.timeout} "
                "(the worker timeout), or the worker is killed before the deadline answers"
            )
        if self.control_socket and not self.control_socket.startswith("/"):
            raise SettingsError(f"DLQR_CONTROL_SOCKET={self.control_socket!r}: must be an absolute path")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``DLQR_*`` variables (empty values mean "default"); raise SettingsError."""
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            raw = env.get(key, "").strip()
            if not raw:
                continue
            if f.name == "artifacts_dir":
                kwargs[f.name] = Path(raw).expanduser()
            elif f.name in ("log_level", "bind", "worker_class", "control_socket"):
                kwargs[f.name] = raw.upper() if f.name == "log_level" else raw
            else:
                try:
                    kwargs[f.name] = int(raw.replace("_", ""))
                except ValueError:
                    raise SettingsError(f"{key}={raw!r}: must be an integer") from None
        kwargs.update(overrides)
        return cls(**kwargs)

    def check_artifacts_dir(self) -> None:
        """The artifacts dir must exist (individual bundles may still be broken: that is readiness)."""
        if not self.artifacts_dir.is_dir():
            raise SettingsError(
                f"DLQR_ARTIFACTS_DIR={str(self.artifacts_dir)!r}: not a directory "
                "(set DLQR_ARTIFACTS_DIR to the folder holding wine/, seizure/ and digit/)"
            )


def _check_int(key: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SettingsError(f"{key}={value!r}: must be an integer in [{lo}, {hi}]")


def _check_bind(bind: str) -> None:
    """Accept ``host:port``, ``[v6]:port`` or ``unix:/path``."""
    if bind.startswith("unix:"):
        if len(bind) <= len("unix:"):
            raise SettingsError(f"DLQR_BIND={bind!r}: unix socket path is empty")
        return
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"DLQR_BIND={bind!r}: expected HOST:PORT (e.g. 127.0.0.1:8000) or unix:/path")
