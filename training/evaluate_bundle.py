"""Recompute a shipped bundle's test metrics independently from the raw data.

Uses only what the bundle records (test ids, preprocessing, threshold) plus
the verified dataset, so anyone can check the published figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlqr import bundle as B
from dlqr import processing
from dlqr.card import get as get_card
from training import evaluate as E
from training import recipes
from training import train as T


def key_metrics(name: str) -> tuple[str, ...]:
    """The metrics :func:`recompute` compares (the model's recipe's)."""
    return tuple(recipes.get(name).key_metrics)


def test_rows(name: str, ids: list, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs and natural-unit targets of the recorded test rows (the recipe's ``test_rows``)."""
    return recipes.get(name).test_rows(ids, dataset)


def metrics_from_outputs(name: str, prep: dict[str, Any], y: np.ndarray, out: np.ndarray) -> dict[str, Any]:
    """Test metrics of raw network outputs ``out`` against natural-unit targets ``y`` (the task's)."""
    kind = get_card(name).task.kind
    if kind == "regression":
        ts = prep["target_scaler"]
        return E.regression_metrics(
            y, processing.unstandardize(out[:, 0], ts["mean"], ts["scale"]), ts["scale"]
        )
    if kind == "binary":
        return E.binary_metrics(y, out[:, 0], prep["threshold"]["value"])
    return E.multiclass_metrics(y, out)


def recompute(
    name: str, bundle_dir: Path, data_dir=None, cache_dir=None, rtol: float = 1e-6
) -> dict[str, Any]:
    """Verify the bundle, re-run its model on its test split, and compare the metrics."""
    import keras

    b = B.load_bundle(bundle_dir, name)
    split = B.read_json(Path(bundle_dir) / B.TEST_SPLIT)
    model = keras.saving.load_model(str(b.model_path), compile=False, safe_mode=True)
    raw, y = test_rows(name, split["test_ids"], T.load_dataset(name, data_dir, cache_dir))
    out = np.asarray(
        model.predict(processing.model_input(raw, b.preprocessing), batch_size=4096, verbose=0),
        dtype=np.float64,
    )
    got = metrics_from_outputs(name, b.preprocessing, y, out)
    shipped = b.metrics["test"]
    rows = {k: {"recomputed": got[k], "bundle": shipped[k]} for k in key_metrics(name)}
    ok = all(np.isclose(v["recomputed"], v["bundle"], rtol=rtol, atol=1e-9) for v in rows.values())
    return {
        "model": name,
        "version": b.version,
        "n_test": int(len(y)),
        "metrics": rows,
        "matches_bundle": bool(ok),
    }
