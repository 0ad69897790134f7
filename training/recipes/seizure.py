"""Training recipe of seizure: seizure / no seizure for one EEG segment (binary, book ch. 4)."""

from __future__ import annotations

import numpy as np

from dlqr import processing
from dlqr.cards import seizure as SEIZURE
from training import data as D
from training.recipes import Recipe
from training.train import SPLITS, Prepared, _ranges, _subsample, input_transform


def split(cfg: dict, ds: D.SeizureData, strategy: str | None = None) -> dict[str, np.ndarray]:
    sp = cfg["split"]
    strategy = strategy or sp.get("strategy", "grouped")
    if strategy == "grouped":
        return D.grouped_split(ds.groups, ds.y, tuple(sp["fractions"]), sp["seed"])
    if strategy == "rows":
        return D.random_split(len(ds.y), tuple(sp["fractions"]), sp["seed"])
    raise ValueError(f"unknown seizure split strategy {strategy!r}; use 'grouped' or 'rows'")


def prepare(
    cfg: dict, ds: D.SeizureData, max_rows: int | None = None, strategy: str | None = None
) -> Prepared:
    """Seizure's model-ready splits: grouped by recording (default) or random rows."""
    sp = cfg["split"]
    strategy = strategy or sp.get("strategy", "grouped")
    idx = _subsample(split(cfg, ds, strategy), max_rows, sp["seed"])
    transform = input_transform(cfg)
    scaler = D.fit_standard_scaler(processing.apply_input_transform(ds.x[idx["train"]], transform))
    prep = {
        "model": "seizure",
        "task": SEIZURE.CARD.task.kind,
        "features": list(SEIZURE.FEATURES),
        "input_dim": SEIZURE.N_SAMPLES,
        **({"input_transform": transform} if transform else {}),
        "input_scaler": D.scaler_json(scaler),
        "class_labels": list(SEIZURE.CLASS_LABELS),
        "feature_ranges": _ranges(ds.x[idx["train"]]),
    }
    raw = {k: ds.x[v] for k, v in idx.items()}
    groups = {k: set(ds.groups[v].tolist()) for k, v in idx.items()}
    return Prepared(
        name="seizure",
        raw=raw,
        x={k: processing.model_input(raw[k], prep) for k in SPLITS},
        y={k: ds.y[v].astype(np.float32) for k, v in idx.items()},
        y_true={k: ds.y[v] for k, v in idx.items()},
        ids={k: ds.ids[v].tolist() for k, v in idx.items()},
        preprocessing=prep,
        data_info={
            "dataset": "UCI Epileptic Seizure Recognition",
            "payload_sha256": ds.sha256,
            "rows": int(len(ds.y)),
            "positive": "y == 1 (seizure); y in 2..5 negative",
        },
        split_info={
            "strategy": strategy,
            "seed": sp["seed"],
            "fractions": sp["fractions"],
            "sizes": {k: int(len(v)) for k, v in idx.items()},
            "recordings": {k: len(g) for k, g in groups.items()},
            "positives": {k: int(ds.y[v].sum()) for k, v in idx.items()},
            "id_kind": "UCI row id (first CSV column), X<chunk>.<recording>",
        },
    )


def _test_rows(ids: list, ds: D.SeizureData) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs and targets of the recorded test rows (ids: UCI row ids)."""
    from dlqr import bundle as B

    pos = {rid: i for i, rid in enumerate(ds.ids.tolist())}
    missing = [i for i in ids if i not in pos]
    if missing:
        raise B.BundleError(f"{len(missing)} test ids not in the dataset, e.g. {missing[0]!r}")
    idx = np.asarray([pos[i] for i in ids])
    return ds.x[idx], ds.y[idx]


def _train_rows(split: dict, ds: D.SeizureData) -> np.ndarray:
    """Raw inputs of the training rows: every row neither in the recorded test nor val ids."""
    held_out = set(split["test_ids"]) | set(split["val_ids"])
    return ds.x[np.asarray([rid not in held_out for rid in ds.ids.tolist()])]


def _baseline(seed: int, **params):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(random_state=seed, **params)


RECIPE = Recipe(
    name="seizure",
    dataset="seizure",
    load=D.load_seizure,
    prepare=prepare,
    test_rows=_test_rows,
    train_rows=_train_rows,
    quality_bar={"metric": ["roc_auc", "accuracy"], "op": ">=", "value": [0.995, 0.98]},
    key_metrics=("roc_auc", "accuracy", "f1"),
    golden_per_class=2,
    split_strategies={"grouped": "grouped", "rows": "rows"},
    row_split_comparison=True,
    plot_titles={"roc_test": "Seizure: test ROC (grouped split)", "roc_val": "Seizure: validation ROC"},
    baseline_params={
        "learning_rate": 0.05,
        "max_iter": 1000,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 20,
        "l2_regularization": 1.0,
        "early_stopping": True,
        "n_iter_no_change": 50,
    },
    baseline_estimator=_baseline,
    title="seizure: seizure / no seizure for one 1-second EEG segment (binary classification)",
    intended_use="Research and teaching only (*Deep Learning Quick Reference*, ch. 4): flag whether one "
    "178-sample (about 1 s) single-channel EEG segment from the UCI Epileptic Seizure Recognition "
    "data set looks like seizure activity. **Not a medical device and not for clinical use**: it "
    "was trained and tested on one public data set: 500 EEG segments of 23.6 s ('recordings' "
    "here) from one published study of a small number of healthy volunteers and epilepsy "
    "patients (Andrzejak et al. 2001), cut into 1 s chunks by the data set's authors. Other "
    "amplifiers, montages, sampling rates, patients or artefacts are untested.",
    caveats=(
        "Each recording is cut into 23 segments. A random row split (the book's) puts segments of one "
        "recording on both sides; this bundle's split is grouped by recording, and the book-split "
        "figures are shown only for comparison.",
        "The split keeps a recording's chunks together, but the data set does not say which "
        "recording comes from which person, so the same person may appear in train and test: "
        "performance on new patients is not measured.",
        "The test split is a small sample of recordings (see *Data and split*), so its figures are "
        "noisy; the recipe was chosen by recording-grouped cross-validation on the other "
        "recordings, never on test.",
        "Positives are the data set's class 1 (seizure); classes 2-5 (tumour area, healthy area, "
        "eyes open/closed) are all negatives.",
    ),
)
