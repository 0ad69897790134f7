"""The recipe sweep behind the default recipes: grouped CV on the non-test data only.

Usage (from the repository root; one JSON line per candidate on stdout)::

    python scripts/cv_sweep.py wine hgb hgb_tuned single128 ens5_128 ens5_bs64
    python scripts/cv_sweep.py seizure hgb_raw hgb_fft raw_book fft_book fft_ens5 fft_ens5_drop
    python scripts/cv_sweep.py digit cos20 cos20_indrop aug2_cos20 ens3_cos20 ens3_cos14 ens3_cos12

* wine: the default grouped split (identical inputs on one side, 70/15/15, seed
  42); its train+val rows are cut into 5 folds of whole input groups (seed 0).
  Figure: validation MAE in standard deviations of the fold's training target.
* seizure: the default recording-grouped split (80/10/10, seed 42); its 450
  train+val recordings are cut into 5 folds of whole recordings, per class
  (seed 0). Figures: validation ROC AUC, and accuracy at 0.5.
* digit: the book's validation split (last 5,000 training images).
  Figure: validation accuracy of the final weights.

The test split is never read. Early stopping watches the held-out fold (as the
recipes watch their validation split). Keras models are built with the
project's own builders (training.models, training.ensemble), so the
candidates are the recipes' networks. ``EX_THREADS=1`` caps TensorFlow and
BLAS/OpenMP threads (kinder on a shared machine). Slow: minutes per candidate.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from dlqr.processing import log_abs_fft  # noqa: E402
from training import data as D  # noqa: E402
from training import ensemble as EN  # noqa: E402
from training.models import build_model, compile_model  # noqa: E402

DATA = os.environ.get("DLQR_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
WINE_LOG1P = [1, 2, 3, 4, 5, 6, 9]  # the default recipe's log1p columns


def _threads() -> None:
    n = os.environ.get("EX_THREADS")
    if n:
        import tensorflow as tf
        from threadpoolctl import threadpool_limits

        tf.config.threading.set_intra_op_parallelism_threads(int(n))
        tf.config.threading.set_inter_op_parallelism_threads(int(n))
        threadpool_limits(int(n))


def fit_keras(name, mcfg, tcfg, xtr, ytr, xva, yva):
    """Train one candidate network (an ensemble if members > 1); return the folded model and epochs."""
    import keras

    keras.utils.set_random_seed(tcfg.get("seed", 42))
    k = EN.n_members(mcfg)
    if k > 1:
        m = EN.build_training_model(name, mcfg, tcfg.get("seed", 42))
        ytr, yva = EN.tile_targets(name, ytr, k), EN.tile_targets(name, yva, k)
    else:
        m = build_model(name, mcfg, seed=tcfg.get("seed", 42))
    compile_model(m, name, tcfg)
    mon, mode = tcfg.get("monitor", "val_loss"), tcfg.get("monitor_mode", "min")
    cbs = []
    if tcfg.get("es"):
        cbs.append(
            keras.callbacks.EarlyStopping(
                monitor=mon, mode=mode, patience=tcfg["es"], restore_best_weights=True
            )
        )
    if tcfg.get("rlr"):
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=mon, mode=mode, patience=tcfg["rlr"], factor=0.5, min_lr=1e-6
            )
        )
    h = m.fit(
        xtr,
        ytr,
        validation_data=(xva, yva),
        epochs=tcfg["epochs"],
        batch_size=tcfg["batch_size"],
        callbacks=cbs,
        verbose=0,
        shuffle=True,
    )
    return (EN.fold(name, mcfg, m) if k > 1 else m), len(h.history["loss"])


# ---------------------------------------------------------------- wine

WB = {"hidden": [128, 128, 64, 64, 32], "activation": "relu", "dropout": 0.0, "l2": 1e-5}
WT = {
    "seed": 42,
    "loss": "mae",
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 128,
    "epochs": 400,
    "steps_per_execution": 16,
    "es": 30,
    "rlr": 10,
}
WINE = {
    "single128": (WB, WT),
    "ens5_128": ({**WB, "members": 5}, WT),
    "ens5_bs64": ({**WB, "members": 5}, {**WT, "batch_size": 64, "es": 40, "rlr": 15}),
}
HGB_WINE = {
    "hgb": {},
    "hgb_tuned": {
        "learning_rate": 0.05,
        "max_iter": 2000,
        "max_leaf_nodes": 31,
        "l2_regularization": 1.0,
        "early_stopping": True,
        "validation_fraction": 0.15,
        "n_iter_no_change": 50,
    },
}


def wine(candidates):
    from sklearn.ensemble import HistGradientBoostingRegressor

    ds = D.load_wine(DATA)
    x, y, g = ds.x, ds.y, D.duplicate_groups(ds.x)
    sp = D.grouped_row_split(g, (0.7, 0.15, 0.15), 42)
    nontest = np.sort(np.r_[sp["train"], sp["val"]])
    folds = D.grouped_kfold(g[nontest], 5, 0)
    for name in candidates:
        res = []
        for f in range(5):
            vi = nontest[folds[f]]
            ti = nontest[np.concatenate([folds[j] for j in range(5) if j != f])]
            ym, ys = y[ti].mean(), y[ti].std()
            t0 = time.perf_counter()
            if name in HGB_WINE:
                m = HistGradientBoostingRegressor(random_state=42, **HGB_WINE[name])
                m.fit(x[ti], (y[ti] - ym) / ys)
                pred, ep = m.predict(x[vi]), m.n_iter_
            else:
                a, b = x[ti].copy(), x[vi].copy()
                a[:, WINE_LOG1P], b[:, WINE_LOG1P] = np.log1p(a[:, WINE_LOG1P]), np.log1p(b[:, WINE_LOG1P])
                mu, sd = a.mean(0), a.std(0)
                xtr, xva = ((a - mu) / sd).astype("float32"), ((b - mu) / sd).astype("float32")
                m, ep = fit_keras("wine", *WINE[name], xtr, (y[ti] - ym) / ys, xva, (y[vi] - ym) / ys)
                pred = m.predict(xva, verbose=0)[:, 0]
            mae = float(np.mean(np.abs(pred - (y[vi] - ym) / ys)))
            res.append(
                {"fold": f, "mae": mae, "epochs": int(ep), "seconds": round(time.perf_counter() - t0, 1)}
            )
        maes = [r["mae"] for r in res]
        yield {"name": name, "mean": float(np.mean(maes)), "sd": float(np.std(maes, ddof=1)), "folds": res}


# ---------------------------------------------------------------- seizure

SB = {"hidden": [128, 64, 64, 32, 16], "activation": "relu", "dropout": 0.0, "l2": 0.0}
ST = {
    "seed": 42,
    "loss": "binary_crossentropy",
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 32,
    "epochs": 100,
    "steps_per_execution": 16,
    "es": 15,
    "rlr": 5,
}
SEIZURE = {
    "raw_book": ("raw", SB, ST),
    "fft_book": ("fft", SB, ST),
    "fft_ens5": ("fft", {**SB, "members": 5}, ST),
    "fft_ens5_drop": ("fft", {**SB, "dropout": 0.2, "members": 5}, ST),
}


def seizure(candidates):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    ds = D.load_seizure(DATA)
    sp = D.grouped_split(ds.groups, ds.y, (0.8, 0.1, 0.1), 42)
    nontest = np.sort(np.r_[sp["train"], sp["val"]])
    g, yy = ds.groups[nontest], ds.y[nontest]
    folds = [np.array([], dtype=int)] * 5
    for lab in (0, 1):  # whole recordings, stratified by class
        sub = np.flatnonzero(yy == lab)
        for f, idx in enumerate(D.grouped_kfold(g[sub], 5, 0)):
            folds[f] = np.sort(np.r_[folds[f], sub[idx]])
    x_fft = log_abs_fft(ds.x)
    for name in candidates:
        res = []
        for f in range(5):
            vi = nontest[folds[f]]
            ti = nontest[np.concatenate([folds[j] for j in range(5) if j != f])]
            feats = name.split("_")[1] if name.startswith("hgb") else SEIZURE[name][0]
            x = x_fft if feats == "fft" else ds.x
            mu, sd = x[ti].mean(0), x[ti].std(0)
            xtr, xva = ((x[ti] - mu) / sd).astype("float32"), ((x[vi] - mu) / sd).astype("float32")
            t0 = time.perf_counter()
            if name.startswith("hgb"):
                m = HistGradientBoostingClassifier(
                    learning_rate=0.05,
                    max_iter=1000,
                    l2_regularization=1.0,
                    early_stopping=True,
                    n_iter_no_change=50,
                    random_state=42,
                ).fit(xtr, ds.y[ti])
                p, ep = m.predict_proba(xva)[:, 1], m.n_iter_
            else:
                _, mc, tc = SEIZURE[name]
                ytr, yva = ds.y[ti].astype("float32"), ds.y[vi].astype("float32")
                m, ep = fit_keras("seizure", mc, tc, xtr, ytr, xva, yva)
                p = m.predict(xva, verbose=0)[:, 0]
            res.append(
                {
                    "fold": f,
                    "auc": float(roc_auc_score(ds.y[vi], p)),
                    "acc": float(np.mean((p >= 0.5) == ds.y[vi])),
                    "epochs": int(ep),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
        a, c = [r["auc"] for r in res], [r["acc"] for r in res]
        yield {
            "name": name,
            "auc": float(np.mean(a)),
            "auc_sd": float(np.std(a, ddof=1)),
            "acc": float(np.mean(c)),
            "acc_sd": float(np.std(c, ddof=1)),
            "folds": res,
        }


# ---------------------------------------------------------------- digit

DB = {"hidden": [512, 256, 128], "activation": "relu", "dropout": 0.5, "l2": 0.0}
DIGIT = {  # (model, max pixel shift for augmentation, epochs of the cosine schedule)
    "cos20": (DB, 0, 20),
    "cos20_indrop": ({**DB, "input_dropout": 0.2}, 0, 20),
    "aug2_cos20": (DB, 2, 20),  # random shifts of up to 2 pixels, redrawn every epoch
    "ens3_cos20": ({**DB, "members": 3}, 0, 20),
    "ens3_cos14": ({**DB, "members": 3}, 0, 14),
    "ens3_cos12": ({**DB, "members": 3}, 0, 12),
}


def shift_images(x, rng, max_shift):
    """Every flattened 28x28 image shifted by its own random (dy, dx) in [-max_shift, max_shift]."""
    n = len(x)
    pad = np.pad(x.reshape(n, 28, 28), ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, n), rng.integers(0, 2 * max_shift + 1, n)
    rows = dy[:, None] + np.arange(28)[None, :]
    cols = dx[:, None] + np.arange(28)[None, :]
    return pad[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]].reshape(n, -1)


def digit(candidates):
    import keras

    class Shifted(keras.utils.PyDataset):
        def __init__(self, x, y, bs, seed, max_shift):
            super().__init__()
            self.x, self.y, self.bs, self.ms = x, y, bs, max_shift
            self.rng = np.random.default_rng(seed)
            self.on_epoch_end()

        def __len__(self):
            return math.ceil(len(self.x) / self.bs)

        def on_epoch_end(self):
            perm = self.rng.permutation(len(self.x))
            self.xe, self.ye = shift_images(self.x[perm], self.rng, self.ms), self.y[perm]

        def __getitem__(self, i):
            s = slice(i * self.bs, (i + 1) * self.bs)
            return self.xe[s], self.ye[s]

    ds = D.load_mnist(DATA)
    x = ds.x_train.reshape(60000, -1).astype("float32") / 255.0
    y = np.eye(10, dtype="float32")[ds.y_train]
    xtr, ytr, xva, yva = x[:55000], y[:55000], x[55000:], y[55000:]
    bs, lr = 128, 1e-3
    for name in candidates:
        mc, shift, epochs = DIGIT[name]
        k = EN.n_members(mc)
        keras.utils.set_random_seed(42)
        m = EN.build_training_model("digit", mc, 42) if k > 1 else build_model("digit", mc, seed=42)
        sched = keras.optimizers.schedules.CosineDecay(lr, decay_steps=math.ceil(len(xtr) / bs) * epochs)
        m.compile(
            optimizer=keras.optimizers.Adam(sched),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=32,
        )
        t0 = time.perf_counter()
        if shift:
            m.fit(Shifted(xtr, ytr, bs, 42, shift), validation_data=(xva, yva), epochs=epochs, verbose=0)
        else:
            yt, yv = (
                (EN.tile_targets("digit", ytr, k), EN.tile_targets("digit", yva, k)) if k > 1 else (ytr, yva)
            )
            m.fit(xtr, yt, validation_data=(xva, yv), epochs=epochs, batch_size=bs, verbose=0)
        fm = EN.fold("digit", mc, m) if k > 1 else m
        acc = float(np.mean(np.argmax(fm.predict(xva, verbose=0), 1) == ds.y_train[55000:]))
        yield {"name": name, "val_accuracy": acc, "seconds_per_epoch": (time.perf_counter() - t0) / epochs}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("wine", "seizure", "digit"):
        print(__doc__)
        return 2
    _threads()
    sweep = {"wine": wine, "seizure": seizure, "digit": digit}[argv[0]]
    for row in sweep(argv[1:]):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
