"""Service settings from ``DLQR_*`` environment variables, validated once at start (pydantic-settings).

Both the Gunicorn config (bind, workers, timeouts) and the app factory (artifacts
dir, limits, log level) read the same :class:`Settings`, so a typo such as
``DLQR_WORKERS=two`` stops the server at start with one clear line
(``DLQR_WORKERS='two': must be an integer``) instead of surfacing later as a
confusing runtime error. pydantic-settings reads and types the variables;
this module only words its errors for an operator and adds the checks it
cannot express (bind syntax, the artifacts directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DLQR_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """An environment setting is malformed or out of range."""


class _SettingConflict(ValueError):
    """Two settings that cannot go together; names the first (worded by _operator_message)."""

    def __init__(self, name: str, value: Any, what: str):
        super().__init__(f"{ENV_PREFIX}{name.upper()}={value!r}: {what}")


def default_artifacts_dir() -> Path:
    """The repo's ``artifacts/`` beside the package, else ``./artifacts``.

    The package-relative path works for a checkout or an editable install (and the
    container's WORKDIR); a non-editable install should set ``DLQR_ARTIFACTS_DIR``.
    """
    beside_package = Path(__file__).resolve().parents[1] / "artifacts"
    if beside_package.is_dir():
        return beside_package
    return Path.cwd() / "artifacts"


def _int(default: int, lo: int, hi: int, doc: str) -> Any:
    return Field(default, ge=lo, le=hi, description=doc, json_schema_extra={"lo": lo, "hi": hi})


class Settings(BaseSettings):
    """Validated service settings; build with :meth:`from_env`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", validate_default=False
    )

    artifacts_dir: Path = Field(default_factory=default_artifacts_dir)
    max_batch: int = _int(256, 1, 100_000, "most instances per request")
    max_body_bytes: int = _int(8 * 1024 * 1024, 1024, 1 << 30, "largest request body")
    max_image_pixels: int = _int(4096 * 4096, 28 * 28, 1 << 28, "largest decoded image")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    bind: str = "127.0.0.1:8000"
    workers: int = _int(2, 1, 256, "Gunicorn worker processes")
    threads: int = _int(1, 1, 256, "threads per worker")
    timeout: int = _int(30, 1, 3600, "seconds before a silent worker is replaced")
    graceful_timeout: int = _int(20, 0, 3600, "seconds to finish in-flight requests on stop")
    keepalive: int = _int(2, 0, 3600, "keep-alive seconds")
    #: ONNX Runtime intra-op threads per session (1: the workers already use every core).
    ort_threads: int = _int(1, 1, 64, "ONNX Runtime intra-op threads per model")
    #: Load model.h5 with Keras at start and compare it with ONNX Runtime (needs Keras installed).
    keras_crosscheck: bool = False
    #: Comma-separated model names to serve (default: every registered card).
    models: str = ""
    #: Served versions: "routing" (each model's routing.json; without one, as "latest"), "latest",
    #: "all", a version, or per model "wine:2026.05.01.120000,digit:all".
    version_policy: str = "routing"
    #: Seconds between two scans of the model repository for new/removed versions (0: never).
    poll_seconds: float = Field(5.0, ge=0, le=86_400, description="repository poll interval")
    # --- production hardening (serving/guard.py, serving/workers.py; docs/hardening.md) ---
    #: gevent | gthread | sync: see serving/workers.py.
    worker_class: Literal["gevent", "gthread", "sync"] = "gevent"
    worker_connections: int = _int(
        1000, 1, 100_000, "gevent: open connections per worker (idle keep-alive included)"
    )
    read_timeout: int = _int(
        5, 1, 3600, "s to send the request head, and again the body; slower clients get 408"
    )
    request_timeout: int = _int(
        10, 1, 3600, "s from head read to answer; past it 503 (queued) or 504 (working)"
    )
    max_inflight: int = _int(
        32, 1, 100_000, "requests in work per worker; more are shed with 503 + Retry-After"
    )
    max_request_pixels: int = _int(
        4096 * 4096, 28 * 28, 1 << 32, "decoded image pixels per request, all instances"
    )
    #: Gunicorn control socket path; empty: no socket.
    control_socket: str = ""
    # --- throughput (serving/balance.py, serving/batching.py; docs/batching.md) ---
    #: gevent, several workers: only the least-loaded workers accept new connections.
    balance_connections: bool = True
    #: Adaptive batching: most rows in one model run (MLServer ``max_batch_size``); 1: off.
    max_batch_size: int = _int(64, 1, 100_000, "rows per batched model run; 1 turns batching off")
    #: Adaptive batching: longest a request waits for batch-mates (Triton ``max_queue_delay_microseconds``).
    max_queue_delay_microseconds: int = _int(
        2000, 0, 10_000_000, "us a queued request waits for batch-mates (only while others are queued)"
    )
    # --- traffic feedback (serving/monitor.py, serving/payload_log.py; docs/monitoring.md) ---
    #: Drift monitor against each bundle's reference.json (a background observer).
    monitor_enabled: bool = True
    monitor_window_requests: int = _int(1000, 1, 10_000_000, "requests per drift window")
    monitor_window_seconds: float = Field(
        300.0, ge=1, le=86_400, description="s after which a drift window closes (once it has min rows)"
    )
    monitor_min_rows: int = _int(500, 1, 10_000_000, "rows a drift window needs before it may close on time")
    #: Payload log: sampled requests as rotated JSONL files (off by default).
    payload_log_enabled: bool = False
    #: Directory of the payload log files (a writable volume or tmpfs; required when enabled).
    payload_log_dir: str = ""
    payload_log_sample: float = Field(1.0, ge=0, le=1, description="share of requests logged")
    payload_log_max_bytes: int = _int(64 * 1024 * 1024, 1024, 1 << 40, "bytes per payload log file")
    payload_log_max_files: int = _int(10, 1, 10_000, "payload log files kept per process")
    payload_log_queue: int = _int(10_000, 1, 10_000_000, "payload lines waiting to be written")
    #: Per card field: "hash" or "drop", e.g. "wine:ph=hash,digit:pixels=drop" (or "*:field=...").
    payload_log_redact: str = ""

    @field_validator("*", mode="before")
    @classmethod
    def _blank_means_default(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise PydanticUseDefault()
        return value

    @field_validator("max_batch", "max_body_bytes", "max_image_pixels", "workers", "threads", "timeout",
                     "graceful_timeout", "keepalive", "ort_threads", "worker_connections", "read_timeout",
                     "request_timeout", "max_inflight", "max_request_pixels", "max_batch_size",
                     "max_queue_delay_microseconds", "monitor_window_requests", "monitor_min_rows",
                     "payload_log_max_bytes", "payload_log_max_files", "payload_log_queue",
                     mode="before")  # fmt: skip
    @classmethod
    def _underscored_int(cls, value: Any) -> Any:
        # "1_048_576" reads as in Python; anything else that is not an integer is refused below.
        if isinstance(value, str) and value.replace("_", "").lstrip("-").isdigit():
            return int(value.replace("_", ""))
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("artifacts_dir", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str) else value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: str) -> str:
        # Checked here, so a typo stops the Gunicorn master at start (not each worker at boot).
        from dlqr import card as cards

        for name in (n.strip() for n in value.split(",") if n.strip()):
            if name not in cards.names():
                raise ValueError(f"no model card named {name!r} (registered: {', '.join(cards.names())})")
        return value

    @field_validator("version_policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        from dlqr.repository import parse_policy

        parse_policy(value)  # PolicyError is a ValueError: worded like any other bad setting
        return value

    @property
    def policy(self):
        """``version_policy`` parsed (:class:`dlqr.repository.Policy`)."""
        from dlqr.repository import parse_policy

        return parse_policy(self.version_policy)

    @field_validator("control_socket")
    @classmethod
    def _absolute_socket(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.threads > 1 and self.worker_class != "gthread":
            raise _SettingConflict("threads", self.threads, "only DLQR_WORKER_CLASS=gthread uses threads")
        if self.request_timeout >= self.timeout:
            raise _SettingConflict(
                "request_timeout",
                self.request_timeout,
                f"must be below DLQR_TIMEOUT={self.timeout} (the worker timeout), or the worker is killed "
                "before the deadline answers",
            )
        return self

    @field_validator("bind")
    @classmethod
    def _check_bind(cls, bind: str) -> str:
        """Accept ``host:port``, ``[v6]:port`` or ``unix:/path``."""
        if bind.startswith("unix:"):
            if len(bind) <= len("unix:"):
                raise ValueError("unix socket path is empty")
            return bind
        host, sep, port = bind.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected HOST:PORT (e.g. 127.0.0.1:8000) or unix:/path")
        return bind

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Read ``DLQR_*`` variables (blank values mean "default"), apply overrides; raise SettingsError."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(_operator_message(cls, exc)) from None

    @property
    def model_names(self) -> tuple[str, ...] | None:
        """``DLQR_MODELS`` as a tuple, or None for every registered card."""
        names = tuple(n.strip() for n in self.models.split(",") if n.strip())
        return names or None

    def check_artifacts_dir(self) -> None:
        """The artifacts dir must exist (individual bundles may still be broken: that is readiness)."""
        if not self.artifacts_dir.is_dir():
            raise SettingsError(
                f"DLQR_ARTIFACTS_DIR={str(self.artifacts_dir)!r}: not a directory "
                "(set DLQR_ARTIFACTS_DIR to the folder holding one bundle folder per model)"
            )


def _operator_message(cls: type[Settings], exc: ValidationError) -> str:
    """The first error as ``DLQR_NAME='value': what is wrong``."""
    err = exc.errors(include_url=False)[0]
    conflict = (err.get("ctx") or {}).get("error")
    if isinstance(conflict, _SettingConflict):
        return str(conflict)
    name = str(err["loc"][0]) if err["loc"] else "?"
    key = ENV_PREFIX + name.upper()
    value = err.get("input")
    field = cls.model_fields.get(name)
    extra = (field.json_schema_extra if field is not None else None) or {}
    if err["type"] in ("int_parsing", "int_from_float", "int_type"):
        what = "must be an integer"
    elif "lo" in extra and err["type"].startswith(("greater", "less")):
        what = f"must be an integer in [{extra['lo']}, {extra['hi']}]"
    elif name == "log_level":
        what = f"must be one of {', '.join(LOG_LEVELS)}"
    elif name == "worker_class":
        what = "must be one of gevent, gthread, sync"
    else:
        what = str(err["msg"]).removeprefix("Value error, ")
    return f"{key}={value!r}: {what}"
