"""Training recipe of digit: handwritten digit 0-9 (10-way classification, book ch. 5)."""

from __future__ import annotations

import numpy as np

from dlqr import processing
from dlqr.cards import digit as DIGIT
from training import data as D
from training.recipes import Recipe
from training.train import SPLITS, Prepared, _subsample


def prepare(cfg: dict, ds: D.MnistData, max_rows: int | None = None) -> Prepared:
    """Digit's model-ready splits: MNIST's train set minus its last validation_size rows, t10k as test."""
    sp = cfg["split"]
    idx = D.mnist_split(len(ds.y_train), int(sp["validation_size"]))
    idx["test"] = np.arange(len(ds.y_test))
    idx = _subsample(idx, max_rows, sp["seed"])
    prep = {
        "model": "digit",
        "task": DIGIT.CARD.task.kind,
        "features": [f"px{i}" for i in range(DIGIT.N_PIXELS)],
        "input_dim": DIGIT.N_PIXELS,
        "input_scaler": {"type": "divide", "divisor": float(DIGIT.PIXEL_MAX)},
        "image_shape": [DIGIT.HEIGHT, DIGIT.WIDTH],
        "pixel_range": [0, DIGIT.PIXEL_MAX],
        "class_labels": list(DIGIT.CLASS_LABELS),
        "feature_ranges": None,
    }
    flat_train = ds.x_train.reshape(len(ds.x_train), -1)
    flat_test = ds.x_test.reshape(len(ds.x_test), -1)
    raw = {"train": flat_train[idx["train"]], "val": flat_train[idx["val"]], "test": flat_test[idx["test"]]}
    labels = {
        "train": ds.y_train[idx["train"]],
        "val": ds.y_train[idx["val"]],
        "test": ds.y_test[idx["test"]],
    }
    eye = np.eye(10, dtype=np.float32)
    return Prepared(
        name="digit",
        raw=raw,
        x={k: processing.model_input(raw[k], prep) for k in SPLITS},
        y={k: eye[v] for k, v in labels.items()},
        y_true={k: v.astype(np.int64) for k, v in labels.items()},
        ids={k: v.tolist() for k, v in idx.items()},
        preprocessing=prep,
        data_info={
            "dataset": "MNIST (LeCun, Cortes, Burges)",
            "payload_sha256": ds.sha256,
            "rows": {"train": int(len(ds.y_train)), "test": int(len(ds.y_test))},
        },
        split_info={
            "strategy": "mnist_standard_last_val",
            "seed": sp["seed"],
            "validation_size": int(sp["validation_size"]),
            "sizes": {k: int(len(v)) for k, v in idx.items()},
            "id_kind": "train/val: index into train-images; test: index into t10k-images",
        },
    )


def _test_rows(ids: list, ds: D.MnistData) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels and labels of the recorded test rows (ids: indices into t10k-images)."""
    idx = np.asarray(ids, dtype=np.int64)
    return ds.x_test.reshape(len(ds.x_test), -1)[idx], ds.y_test[idx]


def _train_rows(split: dict, ds: D.MnistData) -> np.ndarray:
    """Raw pixels of the training rows: train-images minus the recorded val ids (test is t10k)."""
    keep = np.ones(len(ds.y_train), bool)
    keep[np.asarray(split["val_ids"], dtype=np.int64)] = False
    return ds.x_train.reshape(len(ds.x_train), -1)[keep]


def _baseline(seed: int, **params):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(random_state=seed, **params)


RECIPE = Recipe(
    name="digit",
    dataset="mnist",
    load=D.load_mnist,
    prepare=prepare,
    test_rows=_test_rows,
    train_rows=_train_rows,
    quality_bar={"metric": "accuracy", "op": ">=", "value": 0.985},
    key_metrics=("accuracy",),
    golden_per_class=1,
    plot_titles={"confusion_test": "Digit: test confusion matrix"},
    baseline_params={"C": 0.1, "max_iter": 200, "tol": 1e-4},
    baseline_estimator=_baseline,
    title="digit: handwritten digit 0-9 from a 28x28 grey image (10-way classification)",
    intended_use="Classify a centred, size-normalised handwritten digit as MNIST presents it (white on black, "
    "28x28, 0-255). A teaching model (*Deep Learning Quick Reference*, ch. 5). Photos, printed "
    "digits, several digits or letters are out of scope and still get a (confident-looking) answer.",
    caveats=(
        "MNIST's test set is a standard benchmark that many published models were tuned against.",
        "Probabilities are softmax outputs, not calibrated confidences.",
    ),
)
