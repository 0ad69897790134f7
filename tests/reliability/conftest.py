"""The reliability suite's server: one real Gunicorn, started by scripts/chaos.py exactly as `make serve`."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location("chaos", REPO_ROOT / "scripts" / "chaos.py")
chaos = importlib.util.module_from_spec(_spec)
sys.modules["chaos"] = chaos
_spec.loader.exec_module(chaos)


@pytest.fixture(scope="session")
def server():
    """Two gevent workers on a free loopback port with the committed bundles, DLQR_READ_TIMEOUT=3,
    DLQR_MAX_INFLIGHT=4 (so that the overload test sheds) and an empty HOME (no control socket in it)."""
    workdir = Path(tempfile.mkdtemp(prefix="dlqr-reliability-"))
    (workdir / "home").mkdir()
    env = {
        "DLQR_WORKERS": "2",
        "DLQR_READ_TIMEOUT": "3",
        "DLQR_MAX_INFLIGHT": "4",
        "HOME": str(workdir / "home"),
        "XDG_RUNTIME_DIR": "",
    }
    srv = chaos.Server(REPO_ROOT, workdir, env, "reliability")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
