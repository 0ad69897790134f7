"""Build small but real artifact bundles for serving tests.

A bundle made here is written by the real export (:func:`training.export.export_bundle`):
a Keras ``.h5`` MLP with the card's input/output sizes, its ``model.onnx``
checked against Keras, preprocessing.json, metrics.json, test_split.json, a
report file and a sealed manifest with sha256s and golden pairs computed
through :mod:`dlqr.processing` and the card's task, so the server cannot tell
it from a trained one except by its accuracy.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlqr import bundle as B
from dlqr.card import get as get_card
from dlqr.cards import digit as DIGIT
from dlqr.cards import seizure as SEIZURE
from dlqr.cards import wine as WINE

# The same golden-pair builder and export the real training uses, so test bundles match shipped ones.
from training.export import export_bundle, golden_pairs

#: The built-in cards (dlqr/cards/), in their listed order; the bundles built here cover exactly these.
MODEL_NAMES = ("wine", "seizure", "digit")

#: Plausible white-wine statistics (mean, std) per feature, API order.
WINE_STATS = {
    "fixed_acidity": (6.85, 0.84),
    "volatile_acidity": (0.28, 0.10),
    "citric_acid": (0.33, 0.12),
    "residual_sugar": (6.4, 5.1),
    "chlorides": (0.046, 0.022),
    "free_sulfur_dioxide": (35.3, 17.0),
    "total_sulfur_dioxide": (138.4, 42.5),
    "density": (0.994, 0.003),
    "ph": (3.19, 0.15),
    "sulphates": (0.49, 0.11),
}


def preprocessing(name: str, threshold: float = 0.5) -> dict[str, Any]:
    """A preprocessing.json for ``name`` with realistic scalers and ranges."""
    if name == "wine":
        mean = [WINE_STATS[f][0] for f in WINE.FEATURES]
        scale = [WINE_STATS[f][1] for f in WINE.FEATURES]
        return {
            "model": "wine",
            "task": "regression",
            "features": list(WINE.FEATURES),
            "input_dim": len(WINE.FEATURES),
            "input_scaler": {"type": "standard", "mean": mean, "scale": scale},
            "target": "alcohol",
            "units": "% vol",
            "target_scaler": {"type": "standard", "mean": 10.5, "scale": 1.23},
            "feature_ranges": {
                "min": [max(0.0, m - 3 * s) for m, s in zip(mean, scale, strict=True)],
                "max": [m + 3 * s for m, s in zip(mean, scale, strict=True)],
            },
        }
    if name == "seizure":
        n = SEIZURE.N_SAMPLES
        return {
            "model": "seizure",
            "task": "binary",
            "features": list(SEIZURE.FEATURES),
            "input_dim": n,
            "input_scaler": {"type": "standard", "mean": [-10.0] * n, "scale": [160.0] * n},
            "class_labels": list(SEIZURE.CLASS_LABELS),
            "threshold": {
                "value": threshold,
                "policy": "max_f1",
                "val_precision": 0.9,
                "val_recall": 0.9,
                "val_f1": 0.9,
            },
            "feature_ranges": {"min": [-1800.0] * n, "max": [2000.0] * n},
        }
    if name == "digit":
        return {
            "model": "digit",
            "task": "multiclass",
            "features": list(DIGIT.FEATURES),
            "input_dim": DIGIT.N_PIXELS,
            "input_scaler": {"type": "divide", "divisor": 255.0},
            "image_shape": [DIGIT.HEIGHT, DIGIT.WIDTH],
            "class_labels": list(DIGIT.CLASS_LABELS),
            "feature_ranges": None,
        }
    raise ValueError(name)


def sample_rows(name: str, n: int, seed: int = 0) -> np.ndarray:
    """Random inputs in API units (valid under the request schema)."""
    rng = np.random.default_rng(seed)
    if name == "wine":
        mean = np.array([WINE_STATS[f][0] for f in WINE.FEATURES])
        std = np.array([WINE_STATS[f][1] for f in WINE.FEATURES])
        return np.round(np.abs(rng.normal(mean, std, size=(n, len(mean)))), 4)
    if name == "seizure":
        return np.round(rng.normal(-10, 150, size=(n, SEIZURE.N_SAMPLES)))
    if name == "digit":
        x = rng.integers(0, 256, size=(n, DIGIT.N_PIXELS))
        x[rng.random(x.shape) < 0.8] = 0
        return x.astype(np.float64)
    raise ValueError(name)


def api_instance(name: str, row: np.ndarray, prep: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row in API units as the JSON instance a client would POST (the card's own conversion)."""
    features = (prep or {}).get("features")
    return get_card(name).instance_from_row(row, features)


def build_model(
    name: str, hidden: Sequence[int] = (16, 8), seed: int = 0, dropout: float = 0.0, activation: str = "relu"
):
    """A fresh Keras MLP with the card's input/output sizes (the book's layer types)."""
    import keras

    card = get_card(name)
    keras.utils.set_random_seed(seed)
    layers: list[Any] = [keras.Input(shape=(card.input_dim,), name="features")]
    for units in hidden:
        layers.append(keras.layers.Dense(int(units), activation=activation))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(card.output_dim, activation=card.task.output_activation))
    return keras.Sequential(layers, name=name)


DEFAULT_METRICS = {
    "regression": {"test": {"mae": 0.5, "rmse": 0.7, "mae_scaled": 0.4}},
    "binary": {"test": {"roc_auc": 0.9, "accuracy": 0.9, "confusion_matrix": [[1, 0], [0, 1]]}},
    "multiclass": {"test": {"accuracy": 0.9}},
}


def write_bundle(
    dest: Path,
    name: str,
    *,
    model=None,
    hidden: Sequence[int] = (16, 8),
    seed: int = 0,
    version: str = "2026.01.01.000000",
    n_golden: int = 4,
    prep: dict[str, Any] | None = None,
    rows: np.ndarray | None = None,
    manifest_hook: Callable[[dict[str, Any]], None] | None = None,
    skip_onnx: bool = False,
) -> Path:
    """Build and seal one bundle at ``dest`` (``.../artifacts/<name>``) with the real export.

    ``skip_onnx``: sealed without ``model.onnx``, as ``train --skip-onnx`` writes it.
    """
    model = model if model is not None else build_model(name, hidden, seed)
    prep = prep if prep is not None else preprocessing(name)
    rows = rows if rows is not None else sample_rows(name, n_golden, seed + 100)
    metrics = DEFAULT_METRICS[get_card(name).task.kind]
    report = Path(B.staging_dir(Path(dest).parent / f".report-{name}")) / "history.csv"
    report.write_text("epoch,loss\n0,1.0\n")
    manifest = {
        "version": version,
        "created": "2026-01-01T00:00:00Z",
        "git_commit": "test",
        "library_versions": {},
        "backend": "tensorflow",
        "data": {},
        "split": {},
        "hyperparameters": {"hidden": list(hidden)},
        "golden": golden_pairs(name, model, rows, prep),
    }
    if manifest_hook is not None:
        manifest_hook(manifest)
    try:
        return export_bundle(
            Path(dest),
            name=name,
            model=model,
            preprocessing=prep,
            metrics={"train": metrics["test"], "val": metrics["test"], **metrics},
            test_split={"test_ids": list(range(5))},
            manifest=manifest,
            report_files={"history.csv": report},
            skip_onnx=skip_onnx,
        )
    finally:
        shutil.rmtree(report.parent, ignore_errors=True)


def write_all(root: Path, **kw) -> Path:
    """All three bundles under ``root`` (an artifacts dir)."""
    for name in MODEL_NAMES:
        write_bundle(root / name, name, **kw)
    return root


def reseal(
    root: Path,
    mutate: Callable[[Path], None] = lambda staging: None,
    manifest_hook: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Change files (and optionally the manifest) of a sealed bundle, then seal it again.

    Hashes stay valid, content is altered: models a bundle that was *built* wrong, as
    opposed to one tampered with after sealing.
    """
    root = Path(root)
    sealed = json.loads((root / B.MANIFEST).read_text())
    manifest = {k: v for k, v in sealed.items() if k not in ("files", "bundle_format")}
    if manifest_hook is not None:
        manifest_hook(manifest)
    staging = B.staging_dir(root)
    shutil.rmtree(staging)
    shutil.copytree(root, staging)
    (staging / B.MANIFEST).unlink()
    mutate(staging)
    return B.write_bundle(staging, root, manifest)
