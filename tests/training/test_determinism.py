"""The same seed gives the same bundle: byte-identical model.h5 and the same metrics (CPU)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _train(repo_root, data_dir, out, runs):
    """One short real run through the CLI, in a process of its own."""
    r = subprocess.run(
        [
            sys.executable, "-m", "training", "train", "seizure", "--epochs", "2", "--max-rows", "400",
            "--book-workers", "0", "--baseline-workers", "0", "-q", "--version", "2026.01.01.000000",
            "--allow-below-bar",  # 2 epochs on 400 rows: the figures, not the bars, are compared
            "--data-dir", str(data_dir), "--out", str(out), "--runs-dir", str(runs),
        ],
        cwd=repo_root, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    return out / "seizure" / "2026.01.01.000000"


def _without_timings(metrics: dict) -> dict:
    metrics = dict(metrics)
    metrics["baseline"] = {k: v for k, v in metrics["baseline"].items() if k != "fit_seconds"}
    return metrics


def test_two_runs_with_the_same_seed_give_identical_weights_and_metrics(tmp_path, repo_root, real_data_dir):
    # seizure: the recipe with the most moving parts (operating point chosen on val, book-split comparison).
    a = _train(repo_root, real_data_dir, tmp_path / "a", tmp_path / "runs-a")
    b = _train(repo_root, real_data_dir, tmp_path / "b", tmp_path / "runs-b")
    sha = [hashlib.sha256((d / "model.h5").read_bytes()).hexdigest() for d in (a, b)]
    assert sha[0] == sha[1], "model.h5 differs between two runs with the same seed"
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert _without_timings(ma) == _without_timings(mb)
    assert "book_row_split" in ma  # the comparison fit is covered too
    assert (a / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes()
