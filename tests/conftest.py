"""Shared pytest fixtures (the real datasets, the repo root) and the test lanes by path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The read-only real datasets: $DLQR_DATA_DIR, else ../shared/data beside the checkout."""
    env = os.environ.get("DLQR_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for c in candidates:
        if (c / "wine").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("real datasets not found (set DLQR_DATA_DIR or provide ../shared/data)")
    return d


# --- Test lanes, by path ---------------------------------------------------------------------
# `make test` runs the fast lane (unit tests and in-process app tests); `make test-all` runs it
# first, then every slow lane in this order. A test's lane follows from where its file lives, so
# nobody has to remember a marker: everything outside a slow lane's paths is fast. Paths are
# relative to tests/; a path ending in "/" is a whole directory, and a file named
# `test_*_gunicorn.py` anywhere is in the gunicorn lane (it starts a real server).
SLOW_LANES: dict[str, tuple[str, ...]] = {
    "gunicorn": (
        "serving/test_gunicorn.py",
        "serving/test_batching_gunicorn.py",
        "serving/test_hot_swap.py",
        "serving/test_lifecycle_gunicorn.py",
        "serving/v2/test_conformance.py",
        "serving/v2/test_client.py",
        "docs/test_samples_gunicorn.py",
    ),
    "reliability": ("reliability/",),
    "e2e": ("e2e/",),
    "deploy": (
        "deploy/test_container.py",
        "deploy/test_install_rehearsal.py",
        "deploy/test_prometheus_scrape.py",
    ),
    "training": (
        "training/test_pipeline.py",
        "training/test_train_versions.py",
    ),
}
LANE_ORDER = ("fast", *SLOW_LANES)


def lane_of(relpath: str) -> str:
    """The lane of a test file, from its path relative to tests/ ("fast" unless a slow lane claims it)."""
    relpath = relpath.replace("\\", "/")
    if relpath.rsplit("/", 1)[-1].startswith("test_") and relpath.endswith("_gunicorn.py"):
        return "gunicorn"
    for lane, paths in SLOW_LANES.items():
        if any(relpath == p or (p.endswith("/") and relpath.startswith(p)) for p in paths):
            return lane
    return "fast"


def pytest_collection_modifyitems(config, items):
    """Mark every test of a slow lane `slow`, and run the slow ones lane by lane (gunicorn first)."""
    tests_dir = Path(__file__).resolve().parent
    order = {}
    for item in items:
        lane = lane_of(Path(str(item.path)).resolve().relative_to(tests_dir).as_posix())
        if lane != "fast":
            item.add_marker(pytest.mark.slow)
        order[item.nodeid] = LANE_ORDER.index(lane)
    items.sort(key=lambda it: order[it.nodeid])  # stable: file order kept within a lane


# --- The committed artifacts are read-only to tests ---------------------------------------------
# A test that trains, promotes or pins without its own --out/--repository would write into the
# repository's artifacts/ (a routing file, a history line, a new version). Fail the run if any did.


def artifacts_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (ns)."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def pytest_sessionstart(session):
    session.config._dlqr_artifacts = artifacts_snapshot(REPO_ROOT / "artifacts")


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_dlqr_artifacts", None)
    if before is None:
        return
    after = artifacts_snapshot(REPO_ROOT / "artifacts")
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print(f"\nerror: the test run changed the committed artifacts/: {', '.join(changed[:10])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
