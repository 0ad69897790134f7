"""Fixtures for serving tests: tiny real bundles in tmp_path and apps over them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# In-process apps must use an app-local Prometheus registry; prometheus_client picks
# its value backend from this variable at import, so drop it before anything imports it.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
os.environ.pop("prometheus_multiproc_dir", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from tests.serving import bundles  # noqa: E402


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """A read-only-by-convention artifacts dir with all three tiny bundles."""
    root = tmp_path_factory.mktemp("artifacts")
    return bundles.write_all(root)


@pytest.fixture
def artifacts_copy(artifacts, tmp_path) -> Path:
    """A private copy of the bundles, for tests that tamper with them."""
    dest = tmp_path / "artifacts"
    shutil.copytree(artifacts, dest)
    return dest


@pytest.fixture(scope="session")
def app(artifacts):
    """An app with every model loaded synchronously (shared: do not mutate)."""
    from serving.app import create_app

    application = create_app({"ARTIFACTS_DIR": artifacts, "MODEL_LOADING": "sync"})
    assert application.extensions["dlqr"].registry.all_ready
    return application


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_app() -> Callable[..., Any]:
    """Factory for apps with their own settings: make_app(ARTIFACTS_DIR=..., MAX_BATCH=...)."""
    from serving.app import create_app

    def factory(**config: Any):
        config.setdefault("MODEL_LOADING", "sync")
        return create_app(config)

    return factory


@pytest.fixture(scope="session")
def golden(artifacts) -> dict[str, list[dict]]:
    """The golden pairs of each tiny bundle (real inputs with their expected predictions)."""
    import json

    return {
        n: json.loads((artifacts / n / "manifest.json").read_text())["golden"]
        for n in bundles.MODEL_NAMES
    }
