"""Training recipe of wine: % alcohol of a white wine (regression, book ch. 2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dlqr import processing
from dlqr.cards import wine as WINE
from training import data as D
from training.recipes import Recipe
from training.train import SPLITS, Prepared, _ranges, _subsample

#: Wine split strategies: the default keeps every copy of an input vector on one side.
STRATEGIES = ("grouped_inputs", "rows")


def split(cfg: dict, ds: D.WineData, strategy: str | None = None) -> dict[str, np.ndarray]:
    """Wine's train/val/test rows: grouped by identical input vectors (default) or random rows (book)."""
    sp = cfg["split"]
    strategy = strategy or sp.get("strategy", "grouped_inputs")
    if strategy in ("grouped_inputs", "grouped"):
        return D.grouped_row_split(D.duplicate_groups(ds.x), tuple(sp["fractions"]), sp["seed"])
    if strategy == "rows":
        return D.random_split(len(ds.y), tuple(sp["fractions"]), sp["seed"])
    raise ValueError(f"unknown wine split strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


def prepare(cfg: dict, ds: D.WineData, max_rows: int | None = None, strategy: str | None = None) -> Prepared:
    """Wine's model-ready splits: grouped by identical inputs (default) or random rows."""
    sp = cfg["split"]
    strategy = strategy or sp.get("strategy", "grouped_inputs")
    strategy = "grouped_inputs" if strategy == "grouped" else strategy
    idx = _subsample(split(cfg, ds, strategy), max_rows, sp["seed"])
    log_names = list(cfg.get("features", {}).get("log1p", []))
    unknown = sorted(set(log_names) - set(WINE.FEATURES))
    if unknown:
        raise ValueError(f"[features] log1p names unknown wine inputs: {unknown}")
    log_cols = [WINE.FEATURES.index(n) for n in log_names]
    x_fit = ds.x[idx["train"]].copy()
    x_fit[:, log_cols] = np.log1p(x_fit[:, log_cols])
    x_scaler = D.fit_standard_scaler(x_fit)
    y_scaler = D.fit_standard_scaler(ds.y[idx["train"]])
    prep = {
        "model": "wine",
        "task": WINE.CARD.task.kind,
        "features": list(WINE.FEATURES),
        "input_dim": len(WINE.FEATURES),
        "input_scaler": {**D.scaler_json(x_scaler), "log1p": log_cols, "log1p_features": log_names},
        "target": WINE.TARGET,
        "units": WINE.UNITS,
        "target_scaler": {
            "type": "standard",
            "mean": float(y_scaler.mean_[0]),
            "scale": float(y_scaler.scale_[0]),
        },
        "feature_ranges": _ranges(ds.x[idx["train"]]),
        "csv_columns": list(WINE.CSV_COLUMNS),
    }
    raw = {k: ds.x[v] for k, v in idx.items()}
    return Prepared(
        name="wine",
        raw=raw,
        x={k: processing.model_input(raw[k], prep) for k in SPLITS},
        y={k: processing.standardize(ds.y[v], y_scaler.mean_[0], y_scaler.scale_[0]) for k, v in idx.items()},
        y_true={k: ds.y[v] for k, v in idx.items()},
        ids={k: v.tolist() for k, v in idx.items()},
        preprocessing=prep,
        data_info={
            "dataset": "UCI Wine Quality (white)",
            "payload_sha256": ds.sha256,
            "rows": int(len(ds.y)),
        },
        split_info=_split_info(strategy, sp, ds, idx),
    )


def _split_info(strategy: str, sp: dict, ds: D.WineData, idx: dict[str, np.ndarray]) -> dict[str, Any]:
    """What test_split.json and the manifest record about a wine split."""
    groups = D.duplicate_groups(ds.x)
    sides = {k: set(groups[v].tolist()) for k, v in idx.items()}
    shared = len((sides["train"] | sides["val"]) & sides["test"])
    return {
        "strategy": "random_rows" if strategy == "rows" else strategy,
        "seed": sp["seed"],
        "fractions": sp["fractions"],
        "sizes": {k: int(len(v)) for k, v in idx.items()},
        "distinct_inputs": {k: len(g) for k, g in sides.items()},
        "test_inputs_also_in_train_or_val": shared,
        "groups": (
            "rows with an identical 10-feature input vector form one group; every group lies in one split"
            if strategy == "grouped_inputs"
            else "random rows (the book's split): copies of one input vector can sit on both sides"
        ),
        "id_kind": "0-based data row index in winequality-white.csv (header excluded)",
    }


def _test_rows_by_index(ids: list, ds: D.WineData) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs and targets of the recorded test rows (ids: 0-based row indices)."""
    idx = np.asarray(ids, dtype=np.int64)
    return ds.x[idx], ds.y[idx]


def _train_rows(split: dict, ds: D.WineData) -> np.ndarray:
    """Raw inputs of the training rows: every row neither in the recorded test nor val ids."""
    keep = np.ones(len(ds.y), bool)
    keep[np.asarray(split["test_ids"] + split["val_ids"], dtype=np.int64)] = False
    return ds.x[keep]


def _baseline(seed: int, **params):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(random_state=seed, **params)


RECIPE = Recipe(
    name="wine",
    dataset="wine",
    load=D.load_wine,
    prepare=prepare,
    test_rows=_test_rows_by_index,
    train_rows=_train_rows,
    quality_bar={"metric": "mae_scaled", "op": "<=", "value": 0.19, "book": 0.19},
    baseline_bar="mae_scaled",
    key_metrics=("mae", "rmse", "mae_scaled"),
    golden_per_class=None,
    split_strategies={"grouped": "grouped_inputs", "rows": "rows"},
    row_split_comparison=True,
    report_unseen_inputs=True,
    units="% vol",
    baseline_params={
        "learning_rate": 0.05,
        "max_iter": 2000,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 20,
        "l2_regularization": 1.0,
        "early_stopping": True,
        "n_iter_no_change": 50,
    },
    baseline_estimator=_baseline,
    title="wine: % alcohol of a white wine from 10 physico-chemical measurements (regression)",
    intended_use="Predict the alcohol content (% vol) of a Portuguese *vinho verde* white wine from the 10 "
    "laboratory measurements of the UCI Wine Quality table (sensory `quality` is never an input). "
    "A teaching model from *Deep Learning Quick Reference* (ch. 2). Not for labelling, tax or "
    "regulatory use; wines unlike the 2004-2007 samples of the table (other regions, red wines, "
    "inputs outside the training ranges) are out of scope.",
    caveats=(
        "The UCI white-wine table holds 4,898 rows but only 3,951 distinct input vectors: the same wine "
        "appears several times. A random row split (the book's) puts copies on both sides and flatters "
        "the test error; this bundle's split keeps every copy of an input on one side (see *Data and "
        "split*), and the book-split figures are shown only for comparison.",
        "MAE is reported in % vol and in target standard deviations ('sd', the book's scaled MAE).",
    ),
)
