"""Build small but real artifact bundles for serving tests.

A bundle made here has the exact layout training exports (a Keras ``.h5``
MLP with the right input/output sizes, preprocessing.json, metrics.json,
test_split.json, a report file, a sealed manifest with sha256s and golden
pairs computed by ``keras.Model.predict`` + :mod:`serving.processing`), so
the server cannot tell it from a trained one except by its accuracy.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving import bundle as B
from serving.spec import DIGIT, INPUT_DIMS, OUTPUT_DIMS, SEIZURE, TASKS, WINE

# The same instance/golden-pair builders the real export uses, so test bundles match shipped ones.
from training.export import api_instance, golden_pairs  # noqa: F401  (re-exported for the tests)

OUTPUT_ACTIVATION = {"regression": "linear", "binary": "sigmoid", "multiclass": "softmax"}

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
        mean = [WINE_STATS[f][0] for f in WINE.features]
        scale = [WINE_STATS[f][1] for f in WINE.features]
        return {
            "model": "wine",
            "task": TASKS["wine"],
            "features": list(WINE.features),
            "input_dim": len(WINE.features),
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
        n = SEIZURE.n_samples
        return {
            "model": "seizure",
            "task": TASKS["seizure"],
            "features": list(SEIZURE.features),
            "input_dim": n,
            "input_scaler": {"type": "standard", "mean": [-10.0] * n, "scale": [160.0] * n},
            "class_labels": list(SEIZURE.class_labels),
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
            "task": TASKS["digit"],
            "features": [f"px{i}" for i in range(DIGIT.n_pixels)],
            "input_dim": DIGIT.n_pixels,
            "input_scaler": {"type": "divide", "divisor": 255.0},
            "image_shape": [DIGIT.height, DIGIT.width],
            "class_labels": list(DIGIT.class_labels),
            "feature_ranges": None,
        }
    raise ValueError(name)


def sample_rows(name: str, n: int, seed: int = 0) -> np.ndarray:
    """Random inputs in API units (valid under the request schema)."""
    rng = np.random.default_rng(seed)
    if name == "wine":
        mean = np.array([WINE_STATS[f][0] for f in WINE.features])
        std = np.array([WINE_STATS[f][1] for f in WINE.features])
        return np.round(np.abs(rng.normal(mean, std, size=(n, len(mean)))), 4)
    if name == "seizure":
        return np.round(rng.normal(-10, 150, size=(n, SEIZURE.n_samples)))
    if name == "digit":
        x = rng.integers(0, 256, size=(n, DIGIT.n_pixels))
        x[rng.random(x.shape) < 0.8] = 0
        return x.astype(np.float64)
    raise ValueError(name)


def build_model(
    name: str, hidden: Sequence[int] = (16, 8), seed: int = 0, dropout: float = 0.0, activation: str = "relu"
):
    """A fresh Keras MLP with the spec's input/output sizes (the book's layer types)."""
    import keras

    keras.utils.set_random_seed(seed)
    layers: list[Any] = [keras.Input(shape=(INPUT_DIMS[name],), name="features")]
    for units in hidden:
        layers.append(keras.layers.Dense(int(units), activation=activation))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(OUTPUT_DIMS[name], activation=OUTPUT_ACTIVATION[TASKS[name]]))
    return keras.Sequential(layers, name=name)


def save_h5(model, path: Path) -> None:
    model.save(str(path), include_optimizer=False)


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
    manifest_hook: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Build and seal one bundle at ``dest`` (``.../artifacts/<name>``)."""
    model = model if model is not None else build_model(name, hidden, seed)
    prep = prep if prep is not None else preprocessing(name)
    staging = B.staging_dir(dest)
    save_h5(model, staging / B.MODEL_FILE)
    B.dump_json(prep, staging / B.PREPROCESSING)
    metrics = {
        "wine": {"test": {"mae": 0.5, "rmse": 0.7, "mae_scaled": 0.4}},
        "seizure": {"test": {"roc_auc": 0.9, "accuracy": 0.9, "confusion_matrix": [[1, 0], [0, 1]]}},
        "digit": {"test": {"accuracy": 0.9}},
    }[name]
    B.dump_json({"train": metrics["test"], "val": metrics["test"], **metrics}, staging / B.METRICS)
    B.dump_json({"test_ids": list(range(5))}, staging / B.TEST_SPLIT)
    (staging / "report").mkdir()
    (staging / "report" / "history.csv").write_text("epoch,loss\n0,1.0\n")
    manifest = {
        "model": name,
        "version": version,
        "created": "2026-01-01T00:00:00Z",
        "git_commit": "test",
        "library_versions": {},
        "backend": "tensorflow",
        "data": {},
        "split": {},
        "hyperparameters": {"hidden": list(hidden)},
        "golden": golden_pairs(name, model, sample_rows(name, n_golden, seed + 100), prep),
    }
    if manifest_hook is not None:
        manifest_hook(manifest)
    return B.write_bundle(staging, Path(dest), manifest)


def write_all(root: Path, **kw) -> Path:
    """All three bundles under ``root`` (an artifacts dir)."""
    for name in ("wine", "seizure", "digit"):
        write_bundle(root / name, name, **kw)
    return root


def reseal(root: Path, mutate: Callable[[Path], None]) -> Path:
    """Change files of a sealed bundle, then seal it again (hashes valid, content altered).

    Models a bundle that was *built* wrong, as opposed to one tampered with after sealing.
    """
    root = Path(root)
    sealed = json.loads((root / B.MANIFEST).read_text())
    manifest = {k: v for k, v in sealed.items() if k not in ("files", "bundle_format")}
    staging = B.staging_dir(root)
    shutil.rmtree(staging)
    shutil.copytree(root, staging)
    (staging / B.MANIFEST).unlink()
    mutate(staging)
    return B.write_bundle(staging, root, manifest)
