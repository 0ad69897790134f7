"""Shared pytest fixtures: where the real datasets live, and the repo root."""

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
