"""Gunicorn configuration: ``gunicorn --config serving/gunicorn.conf.py serving.wsgi:app``.

Every value comes from a ``DLQR_*`` environment variable (see
``serving/settings.py`` and the README), validated here so that a bad
setting stops the master at once with one clear line.

This file also prepares the Prometheus multi-process directory *before*
anything imports ``prometheus_client`` (which reads it at import time): a
private temporary directory when ``PROMETHEUS_MULTIPROC_DIR`` is unset
(removed on exit), otherwise the given one, emptied of stale files at start.
Models are loaded in each worker after fork (``preload_app = False``), never
in the master, and before the worker accepts its first connection (the app
factory loads them synchronously): a replaced worker (crash, ``max_requests``,
HUP) takes no request it could not answer.
"""

import gc
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Running from a checkout without an install: make the package importable.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from serving.runtime import prepare_process_env  # noqa: E402
from serving.settings import Settings, SettingsError  # noqa: E402

prepare_process_env()  # thread/log defaults inherited by the workers, before numpy/TF load

try:
    _settings = Settings.from_env()
    _settings.check_artifacts_dir()
except SettingsError as _exc:
    print(f"dlqr-serving: invalid setting: {_exc}", file=sys.stderr)
    sys.exit(2)

# This file runs again on SIGHUP (config reload): prepare the directory only the first time,
# or the reload would wipe the counters that the still-running workers keep adding to.
if not os.environ.get("DLQR_PROMETHEUS_PREPARED"):
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="dlqr-prometheus-")
        os.environ["DLQR_PROMETHEUS_TMPDIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]  # ours: removed on exit
    else:
        _prom_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        _prom_dir.mkdir(parents=True, exist_ok=True)
        for _stale in _prom_dir.glob("*.db"):  # counters of a previous run would be added to ours
            _stale.unlink()
    os.environ["DLQR_PROMETHEUS_PREPARED"] = "1"

# Third-party libraries every worker needs, imported once here and inherited by fork: a worker
# (first start, crash replacement, max_requests, HUP) then imports only this package and loads
# its models. Not this package's own modules, so that HUP keeps loading new code. None of these
# starts a thread or opens a file or socket at import (BLAS is held to one thread above); models
# and metrics are still created after fork only. Not ONNX Runtime either: imported before fork,
# it makes every worker die of SIGABRT at exit (tests/serving/test_gunicorn.py checks the logs).
for _module in ("numpy", "pydantic", "flask", "prometheus_client"):
    importlib.import_module(_module)
# ... and kept out of the cyclic collector's sight (what the gc docs advise before fork): the
# worker's own collection after loading its models then walks only what the worker created.
gc.freeze()

# Shared connection counts for the least-loaded-accepts rule (serving/balance.py), created here
# in the master so that every worker forked later (replacements too) sees the same table.
if _settings.balance_connections and _settings.worker_class == "gevent" and _settings.workers > 1:
    from serving import balance as _balance

    _balance.create_table(_settings.workers)

bind = [_settings.bind]
workers = _settings.workers
threads = _settings.threads
# --- worker model, slow clients, drain, control socket (serving/workers.py, docs/hardening.md) ---
# gevent by default: slow clients cannot tie up a worker, keep-alive is cheap, and the
# measured digit c=8 throughput is at least the sync workers'. The classes add problem+json
# answers for Gunicorn's own errors, the DLQR_READ_TIMEOUT head deadline and a drain on SIGTERM.
_WORKER_CLASSES = {"gevent": "GeventWorker", "gthread": "ThreadWorker", "sync": "SyncWorker"}
worker_class = "serving.workers." + _WORKER_CLASSES[_settings.worker_class]
worker_connections = _settings.worker_connections
pre_request = "serving.workers.pre_request"  # remembers the request, so the app can close its connection
# One control socket per server instance, or none (default): Gunicorn's default path
# ($HOME/.gunicorn/gunicorn.ctl) is shared by every server of a user and cannot be created
# under a read-only root.
control_socket_disable = not _settings.control_socket
if _settings.control_socket:
    control_socket = _settings.control_socket
# --- end of the worker model ---
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
preload_app = False
proc_name = "dlqr-serving"
# Heartbeat files in RAM: a disk-backed /tmp (e.g. overlayfs in containers) can stall workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
# The app writes one JSON line per request itself (with request id, model, latency).
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
logger_class = "serving.logs.GunicornLogger"  # Gunicorn's own messages as JSON too


def on_starting(server):
    server.log.info(
        "starting dlqr-serving: bind=%s workers=%d worker_class=%s threads=%d artifacts=%s prometheus_dir=%s",
        _settings.bind,
        _settings.workers,
        _settings.worker_class,
        _settings.threads,
        _settings.artifacts_dir,
        os.environ["PROMETHEUS_MULTIPROC_DIR"],
    )


def when_ready(server):
    # On stop, no new handshake completes once the workers have drained the accept queue.
    from serving.urls import docs_url
    from serving.workers import refuse_new_connections_on_stop

    refuse_new_connections_on_stop(server)
    # One line that says where to look (the workers log when their models are ready).
    url = docs_url(_settings.bind)
    server.log.info("listening on %s: API docs at %s", _settings.bind, url or "/docs on that socket")


def child_exit(server, worker):
    # Drop the dead worker's live gauges (dlqr_model_ready, dlqr_model_info); its counters stay summed.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    created = os.environ.get("DLQR_PROMETHEUS_TMPDIR")
    if created:
        shutil.rmtree(created, ignore_errors=True)
