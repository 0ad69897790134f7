"""Training: prepare splits and scalers, fit with the recipe's callbacks.

``prepare(name, cfg, dataset)`` turns a parsed dataset into model-ready
arrays through the model's recipe (:mod:`training.recipes`; scalers fitted on
the train split only, through the same ``dlqr.processing`` functions serving
uses); ``fit`` trains it.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlqr import processing
from dlqr.card import get as get_card

SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """Everything training, evaluation and export need for one model."""

    name: str
    raw: dict[str, np.ndarray]  # inputs in API units, per split
    x: dict[str, np.ndarray]  # float32 network inputs, per split
    y: dict[str, np.ndarray]  # training targets (scaled / one-hot), per split
    y_true: dict[str, np.ndarray]  # targets in natural units, per split
    ids: dict[str, list]  # row ids / indices, per split
    preprocessing: dict[str, Any]
    data_info: dict[str, Any]
    split_info: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def _subsample(idx: dict[str, np.ndarray], max_rows: int | None, seed: int) -> dict[str, np.ndarray]:
    """Keep at most ``max_rows`` rows per split (for quick tests), seeded."""
    if not max_rows:
        return idx
    rng = np.random.default_rng(seed)
    return {k: np.sort(rng.choice(v, size=min(max_rows, len(v)), replace=False)) for k, v in idx.items()}


def _ranges(raw_train: np.ndarray) -> dict[str, list[float]]:
    return {"min": raw_train.min(axis=0).tolist(), "max": raw_train.max(axis=0).tolist()}


def input_transform(cfg: dict) -> dict[str, str] | None:
    """The recipe's ``[features] input_transform`` as preprocessing.json's entry, or None."""
    name = cfg.get("features", {}).get("input_transform")
    if not name:
        return None
    if name not in processing.INPUT_TRANSFORMS:
        raise ValueError(
            f"[features] input_transform {name!r} is unknown; choose from {', '.join(processing.INPUT_TRANSFORMS)}"
        )
    return {"type": name}


def load_dataset(name: str, data_dir=None, cache_dir=None):
    """The verified, parsed dataset of model ``name`` (its recipe's loader)."""
    from training import recipes

    return recipes.get(name).load(data_dir, cache_dir)


def prepare(name: str, cfg: dict, dataset, max_rows: int | None = None, **kw) -> Prepared:
    """Model-ready splits of ``dataset`` (its recipe's ``prepare``)."""
    from training import recipes

    return recipes.get(name).prepare(cfg, dataset, max_rows, **kw)


# ------------------------------------------------------------------ callbacks


def _keras_callbacks():
    import keras

    class RocAucCallback(keras.callbacks.Callback):
        """Per-epoch ROC AUC on train and validation (the book's custom callback idea)."""

        def __init__(self, x_train, y_train, x_val, y_val, max_rows: int = 20000):
            super().__init__()
            self.train = (x_train[:max_rows], y_train[:max_rows])
            self.val = (x_val, y_val)

        def on_epoch_end(self, epoch, logs=None):
            from training.evaluate import roc_auc

            logs = logs if logs is not None else {}
            for prefix, (x, y) in (("", self.train), ("val_", self.val)):
                out = self.model.predict(x, batch_size=4096, verbose=0)
                p = out.reshape(len(x), -1).mean(axis=1)  # an ensemble's members: their mean
                logs[f"{prefix}roc_auc"] = roc_auc(y, p)

    class EpochTimer(keras.callbacks.Callback):
        """Wall time of every epoch (for the timing table and the GPU check)."""

        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    return RocAucCallback, EpochTimer


def tensorboard_unavailable() -> str | None:
    """Why the TensorBoard callback cannot run here, or None if it can."""
    import importlib.util

    import keras

    if keras.backend.backend() != "tensorflow":
        return f"it needs the TensorFlow backend (running on {keras.backend.backend()!r})"
    if importlib.util.find_spec("tensorboard") is None:
        return "the 'tensorboard' package is not installed (pip install '.[train]')"
    return None


def build_callbacks(p: Prepared, train_cfg: dict, run_dir: Path, verbose: int) -> tuple[list, Any]:
    """TensorBoard (TF backend only), checkpoint, early stopping, LR schedule, CSV history."""
    import keras

    RocAucCallback, EpochTimer = _keras_callbacks()
    timer = EpochTimer()
    cbs: list = [timer]
    if get_card(p.name).task.kind == "binary":
        # First, so later callbacks (CSV, checkpoint, early stopping) see the AUC keys.
        cbs.insert(0, RocAucCallback(p.x["train"], p.y_true["train"], p.x["val"], p.y_true["val"]))
    monitor, mode = train_cfg["monitor"], train_cfg["monitor_mode"]
    cbs.append(
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoint.weights.h5"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
            verbose=0,
        )
    )
    if int(train_cfg.get("early_stopping_patience", 0)) > 0:
        cbs.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                mode=mode,
                patience=int(train_cfg["early_stopping_patience"]),
                restore_best_weights=True,
                verbose=min(verbose, 1),
            )
        )
    if (
        int(train_cfg.get("reduce_lr_patience", 0)) > 0
        and train_cfg.get("lr_schedule", "constant") == "constant"
    ):
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                mode=mode,
                patience=int(train_cfg["reduce_lr_patience"]),
                factor=float(train_cfg.get("reduce_lr_factor", 0.5)),
                min_lr=1e-6,
                verbose=0,
            )
        )
    cbs.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv")))
    reason = tensorboard_unavailable()
    if reason is None:
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), histogram_freq=0))
    else:
        warnings.warn(f"TensorBoard logging disabled: {reason}", stacklevel=2)
    return cbs, timer


def set_determinism(seed: int) -> None:
    """Seed Python, NumPy and the backend; make TF ops deterministic unless switched off.

    ``TF_DETERMINISTIC_OPS=0`` (``python -m training train --no-deterministic``) skips
    TensorFlow's op determinism; JAX's is ``XLA_FLAGS`` (:func:`training.device.backend_environment`).
    """
    import keras

    from training.device import op_determinism_wanted

    keras.utils.set_random_seed(int(seed))
    if keras.backend.backend() == "tensorflow" and op_determinism_wanted():
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@dataclass
class FitResult:
    model: Any
    history: dict[str, list[float]]
    epoch_times: list[float]
    best_epoch: int
    seconds: float


def fit(p: Prepared, cfg: dict, run_dir: Path, verbose: int | None = None) -> FitResult:
    """Build, compile and train the model; return it with the best weights restored.

    With ``[model] members = k > 1`` the k members train side by side and the
    returned model is their folded average (:mod:`training.ensemble`).
    """
    from training import ensemble
    from training.models import build_model, compile_model

    tc = cfg["train"]
    if verbose is None:
        verbose = 1 if os.isatty(1) else 2  # progress bar on a terminal, one line per epoch in logs
    run_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(tc["seed"])
    k = ensemble.n_members(cfg["model"])
    if k > 1:
        model = ensemble.build_training_model(p.name, cfg["model"], seed=int(tc["seed"]))
        y_train = ensemble.tile_targets(p.name, p.y["train"], k)
        y_val = ensemble.tile_targets(p.name, p.y["val"], k)
    else:
        model = build_model(p.name, cfg["model"], seed=int(tc["seed"]))
        y_train, y_val = p.y["train"], p.y["val"]
    compile_model(model, p.name, tc, steps_per_epoch=-(-len(p.x["train"]) // int(tc["batch_size"])))
    cbs, timer = build_callbacks(p, tc, run_dir, verbose)
    t0 = time.perf_counter()
    hist = model.fit(
        p.x["train"],
        y_train,
        validation_data=(p.x["val"], y_val),
        epochs=int(tc["epochs"]),
        batch_size=int(tc["batch_size"]),
        shuffle=True,
        callbacks=cbs,
        verbose=verbose,
    )
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    mon = history.get(tc["monitor"], [])
    best = (
        (int(np.argmin(mon)) if tc["monitor_mode"] == "min" else int(np.argmax(mon)))
        if mon
        else len(timer.times) - 1
    )
    if int(tc.get("early_stopping_patience", 0)) == 0 and (run_dir / "checkpoint.weights.h5").exists():
        # No early stopping to restore the best weights: take them from the checkpoint.
        model.load_weights(str(run_dir / "checkpoint.weights.h5"))
    if k > 1:
        model = ensemble.fold(p.name, cfg["model"], model)
    return FitResult(model, history, timer.times, best, seconds)
