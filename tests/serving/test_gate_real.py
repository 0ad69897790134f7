"""The promotion gate on the committed bundles and the real data (skipped where the data is absent)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlqr import repository
from serving import gate
from tests.conftest import REPO_ROOT
from tests.serving.test_versions import seal_as_version

ARTIFACTS = REPO_ROOT / "artifacts"
DATA = Path(os.environ.get("DLQR_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="real datasets not found (set DLQR_DATA_DIR)")


def committed(name: str) -> tuple[Path, Path]:
    """(older, newer) committed versions of a model."""
    newer, older = (c.path for c in repository.scan(ARTIFACTS / name)[:2])
    return older, newer


def test_seizure_newer_passes_against_older_on_the_shared_rows():
    older, newer = committed("seizure")
    verdict = gate.run("seizure", newer, older, DATA)
    assert verdict.ok, verdict.lines()
    ev = verdict.checks[-1].evidence
    assert ev["source"] == "data" and ev["rows"] == 1150
    # the recomputed figures on the shared rows equal the recorded test figures (same split)
    assert ev["metrics"]["accuracy"]["challenger"] == pytest.approx(0.98)


def test_seizure_older_is_refused_against_newer():
    older, newer = committed("seizure")
    verdict = gate.run("seizure", older, newer, DATA)
    assert not verdict.ok
    assert "roc_auc" in verdict.checks[-1].detail and not verdict.checks[-1].ok


def test_committed_wine_misses_its_bar():
    older, newer = committed("wine")
    verdict = gate.run("wine", newer, older, DATA)
    bars = verdict.checks[1]
    assert not bars.ok and "mae_scaled" in bars.detail


@pytest.mark.parametrize(("defect", "needle"), [("sha", "sha256 mismatch for model.onnx"),
                                                 ("golden", "golden pair 0 mismatch")])  # fmt: skip
def test_real_bundle_with_a_flipped_byte_or_wrong_golden_is_refused(tmp_path, defect, needle):
    older, newer = committed("digit")
    mdir = tmp_path / "digit"
    mdir.mkdir()
    bad = seal_as_version(newer, mdir, "2026.12.04.000000", defect=defect)
    verdict = gate.run("digit", bad, older, DATA)
    assert not verdict.ok and needle in verdict.checks[0].detail


@pytest.mark.slow
def test_a_real_one_epoch_bundle_is_refused(tmp_path):
    """Train wine for one epoch with the training CLI, then gate it against a committed version.

    (Seizure is no test of this: one epoch of its recipe already clears its bars and the gate.)"""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DLQR_DATA_DIR": str(DATA)}
    cmd = [sys.executable, "-m", "training", "train", "wine", "--epochs", "1", "--book-workers", "0",
           "--out", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), "--version", "e1", "-q",
           "--allow-below-bar"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    older, newer = committed("wine")
    verdict = gate.run("wine", tmp_path / "wine" / "e1", older, DATA)
    assert verdict.checks[0].ok  # a sound bundle ...
    assert not verdict.ok  # ... that is not good enough
    assert not verdict.checks[1].ok or not verdict.checks[2].ok
