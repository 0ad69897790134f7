"""The server the Open Inference Protocol tests talk to, and the samples they send.

By default a real Gunicorn server (``serving/gunicorn.conf.py``, 2 workers) is
started on loopback over the committed ``artifacts/``. Point the kit at any other
server with ``DLQR_V2_BASE_URL=http://host:port``; ``DLQR_V2_ARTIFACTS`` then names
the bundles that server serves (default: the committed ones), whose golden pairs
are the valid inputs and expected predictions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter

from dlqr import repository
from dlqr.card import ModelCard
from dlqr.card import get as get_card
from tests.conftest import REPO_ROOT
from tests.deploy.conftest import all_workers_ready, free_port, stop_process_group

READY_TIMEOUT_S = 120


@dataclass
class Sample:
    """A model's golden pairs as a V2 input tensor (card feature order) and /predict instances."""

    card: ModelCard
    version: str
    instances: list[dict]
    rows: np.ndarray
    predictions: list[dict]
    prep: dict = field(default_factory=dict)


@dataclass
class Target:
    base_url: str
    samples: dict[str, Sample]


def load_samples(artifacts: Path) -> dict[str, Sample]:
    out = {}
    for model_dir in sorted(p for p in artifacts.iterdir() if p.is_dir() and not p.name.startswith(".")):
        bundle = repository.latest_dir(model_dir)
        if bundle is None:
            continue
        manifest = json.loads((bundle / "manifest.json").read_text())
        card = get_card(model_dir.name)
        adapter = TypeAdapter(card.instance)
        golden = manifest["golden"]
        instances = [g["input"] for g in golden]
        rows = card.rows([adapter.validate_python(i) for i in instances], card.features)
        prep = json.loads((bundle / "preprocessing.json").read_text())
        out[card.name] = Sample(
            card, manifest["version"], instances, rows, [g["prediction"] for g in golden], prep
        )
    return out


def _ready(base_url: str) -> bool:
    try:
        return all_workers_ready(base_url)
    except OSError:  # not listening yet
        return False


@pytest.fixture(scope="session")
def v2_target():
    artifacts = Path(os.environ.get("DLQR_V2_ARTIFACTS") or REPO_ROOT / "artifacts")
    samples = load_samples(artifacts)
    base = os.environ.get("DLQR_V2_BASE_URL")
    if base:
        yield Target(base.rstrip("/"), samples)
        return
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="dlqr-v2-server-", suffix=".log", delete=False)  # noqa: SIM115
    env = {
        **os.environ,
        "DLQR_BIND": f"127.0.0.1:{port}",
        "DLQR_ARTIFACTS_DIR": str(artifacts),
        "DLQR_WORKERS": "2",
        "DLQR_LOG_LEVEL": "WARNING",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "serving/gunicorn.conf.py", "serving.wsgi:app"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(base_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server not ready: {Path(log.name).read_text()[-3000:]}")
            time.sleep(0.2)
        yield Target(base_url, samples)
    finally:
        stop_process_group(proc)
        log.close()
        os.unlink(log.name)
