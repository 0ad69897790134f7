"""Strong scikit-learn baselines, fitted on the same split and inputs as the network.

Every bundle's ``metrics.json["baseline"]`` holds the baseline's figures (no
model file, no pickle), so the report can answer "does the network earn its
keep?". The baselines see exactly the arrays the network sees (``Prepared.x``:
the shared preprocessing's output, spectral transform included), fit on the
train split, use the validation split for early stopping and for the seizure
threshold, and are scored once on the test split with the same metric
functions as the network. Everything is seeded, so the figures are
recomputable: :func:`fit_baseline` on the same data returns the same numbers.

Each model's baseline (estimator and hyper-parameters) is declared in its
recipe (:mod:`training.recipes`):

* wine: ``HistGradientBoostingRegressor`` (MAE is reported in target sd units,
  like the network's ``mae_scaled``);
* seizure: ``HistGradientBoostingClassifier``, threshold by the recipe's policy;
* digit: multinomial ``LogisticRegression`` (a tree ensemble on 784 pixels
  would cost minutes on 2 cores).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from dlqr.card import get as get_card
from training import evaluate as E
from training import recipes

#: OpenMP/BLAS threads for the baseline fits. One: on a shared 2-core machine a 2-thread
#: HistGradientBoosting fit measured 175 s wall against 8.8 s single-threaded (same result).
THREADS = 1


def baseline_params(name: str) -> dict[str, Any]:
    """Hyper-parameters of the model's baseline (its recipe's; also written into metrics.json)."""
    return dict(recipes.get(name).baseline_params)


def _estimator(name: str, seed: int):
    return recipes.get(name).baseline_estimator(seed, **baseline_params(name))


def fit_baseline(p, seed: int = 0, op_cfg: dict | None = None, splits=("val", "test")) -> dict[str, Any]:
    """Fit the model's baseline on ``p``'s train split; figures for ``splits`` (a metrics.json entry).

    ``p`` is a :class:`training.train.Prepared`; ``op_cfg`` is the recipe's
    ``[operating_point]`` (seizure only).
    """
    name = p.name
    params = baseline_params(name)
    est = _estimator(name, seed)
    x_tr = np.asarray(p.x["train"], dtype=np.float64)
    t0 = time.perf_counter()
    with threadpool_limits(THREADS):
        _fit(name, est, p, x_tr)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "model": type(est).__name__,
        "library": "scikit-learn",
        "params": {**params, "random_state": seed},
        "inputs": "the network's own inputs (shared preprocessing output), same train/val/test split",
        "fit_seconds": round(seconds, 2),
    }
    if hasattr(est, "n_iter_"):
        out["n_iter"] = int(np.asarray(est.n_iter_).max())
        if "max_iter" in params and not params.get("early_stopping"):
            out["converged"] = out["n_iter"] < params["max_iter"]
    with threadpool_limits(THREADS):
        preds = {k: _predict(name, est, p.x[k]) for k in {"val", *splits}}
    if get_card(name).task.kind == "regression":
        ts = p.preprocessing["target_scaler"]
        for k in splits:
            out[k] = E.regression_metrics(p.y_true[k], preds[k] * ts["scale"] + ts["mean"], ts["scale"])
    elif get_card(name).task.kind == "binary":
        op_cfg = op_cfg or {}
        op = E.choose_threshold(
            p.y_true["val"], preds["val"], op_cfg.get("policy", "max_f1"), op_cfg.get("min_recall", 0.95)
        )
        out["operating_point"] = op
        for k in splits:
            out[k] = _compact(E.binary_metrics(p.y_true[k], preds[k], op["value"]))
    else:
        for k in splits:
            out[k] = _compact(E.multiclass_metrics(p.y_true[k], preds[k]))
    return out


def _fit(name: str, est, p, x_tr: np.ndarray) -> None:
    if get_card(name).task.kind == "regression":
        x_val, y_val = np.asarray(p.x["val"], np.float64), np.asarray(p.y["val"], np.float64)
        est.fit(x_tr, np.asarray(p.y["train"], dtype=np.float64), X_val=x_val, y_val=y_val)
    elif get_card(name).task.kind == "binary":
        est.fit(x_tr, p.y_true["train"], X_val=np.asarray(p.x["val"], np.float64), y_val=p.y_true["val"])
    else:
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            # lbfgs may stop at max_iter on the full digit set; metrics.json says so ("converged").
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(x_tr, p.y_true["train"])


def _predict(name: str, est, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if get_card(name).task.kind == "regression":
        return est.predict(x)
    if get_card(name).task.kind == "binary":
        return est.predict_proba(x)[:, 1]
    return est.predict_proba(x)


def _compact(m: dict[str, Any]) -> dict[str, Any]:
    """Metrics without the per-class report (the network's entry keeps it)."""
    return {k: v for k, v in m.items() if k != "classification_report"}
