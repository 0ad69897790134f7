"""Export: assemble and atomically seal an artifact bundle (see serving/bundle.py).

Nothing here pickles: the model is Keras ``.h5`` without optimizer state, and
everything else is JSON, CSV, PNG or the Markdown model card.
"""

from __future__ import annotations

import datetime as dt
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from serving import bundle as B
from serving import processing


def git_commit(repo: Path | None = None) -> str:
    """HEAD commit of the working tree, '+dirty' if it has uncommitted changes, or 'unknown'."""
    cwd = str(repo or Path(__file__).resolve().parents[1])
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "training", "serving"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers, plus the Keras backend."""
    import keras

    out = {"python": platform.python_version(), "keras_backend": keras.backend.backend()}
    for dist in (
        "keras",
        "tensorflow",
        "tensorflow-cpu",
        "jax",
        "jaxlib",
        "torch",
        "numpy",
        "h5py",
        "scikit-learn",
        "pandas",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def new_version(now: dt.datetime | None = None) -> str:
    """Sortable version string from the UTC creation time, e.g. '2026.11.27.013000'."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y.%m.%d.%H%M%S")


def _api_value(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def api_instance(name: str, raw_row: np.ndarray, prep: dict) -> dict[str, Any]:
    """One raw input row as the JSON instance a client would POST."""
    if name == "wine":
        return {f: _api_value(v) for f, v in zip(prep["features"], raw_row, strict=True)}
    if name == "seizure":
        return {"eeg": [_api_value(v) for v in raw_row]}
    if name == "digit":
        return {"pixels": [int(v) for v in raw_row]}
    raise ValueError(name)


def golden_pairs(name: str, model, raw_rows: np.ndarray, prep: dict) -> list[dict[str, Any]]:
    """Input -> (raw output, prediction) pairs computed through serving's own processing."""
    x = processing.model_input(name, raw_rows, prep)
    out = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    preds = processing.postprocess(name, out, prep)
    return [
        {"input": api_instance(name, row, prep), "raw_output": o.tolist(), "prediction": pr}
        for row, o, pr in zip(raw_rows, out, preds, strict=True)
    ]


def _save_h5(model, path: Path) -> None:
    """Save as Keras HDF5 without optimizer state.

    The bundle contract is ``.h5`` on purpose (serving and other tools read it
    with h5py), so Keras's "legacy format" notice is filtered out here.
    """
    import logging

    class _DropLegacyNotice(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "HDF5 file via `model.save()`" not in record.getMessage()

    flt = _DropLegacyNotice()
    absl = logging.getLogger("absl")
    absl.addFilter(flt)
    try:
        model.save(str(path), include_optimizer=False)
    finally:
        absl.removeFilter(flt)


def write_model_card(staging: Path, manifest: dict, metrics: dict, preprocessing: dict) -> Path:
    """MODEL_CARD.md from the bundle's own documents (hashed by the manifest like the rest)."""
    from training import model_card

    path = staging / model_card.CARD_FILE
    card = model_card.render({"manifest": manifest, "metrics": metrics, "preprocessing": preprocessing})
    path.write_text(card, encoding="utf-8")
    return path


def export_bundle(
    dest: Path,
    *,
    name: str,
    model,
    preprocessing: dict,
    metrics: dict,
    test_split: dict,
    manifest: dict,
    report_files: dict[str, Path],
) -> Path:
    """Write every file into a staging dir next to ``dest``, then seal and rename it."""
    staging = B.staging_dir(dest)
    try:
        _save_h5(model, staging / B.MODEL_FILE)
        B.dump_json(preprocessing, staging / B.PREPROCESSING)
        B.dump_json(metrics, staging / B.METRICS)
        B.dump_json(test_split, staging / B.TEST_SPLIT)
        (staging / "report").mkdir()
        for rel, src in report_files.items():
            shutil.copyfile(src, staging / "report" / rel)
        manifest = {"model": name, **manifest}
        write_model_card(staging, manifest, metrics, preprocessing)
        return B.write_bundle(staging, dest, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # an interrupted export leaves nothing bundle-like
        raise
