"""GPU check: train each model for a few epochs and print per-epoch times and the device.

Meant for a CUDA host, or a GPU machine with ``KERAS_BACKEND=jax``
(no TensorFlow there): only Keras 3 APIs are used, TensorBoard degrades with a
warning. Prints one table; writes no bundle.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from training.device import device_description


def main(epochs: int = 3, data_dir=None, cache_dir=None) -> int:
    import keras

    from dlqr.card import get as get_card
    from dlqr.card import names as model_names
    from training import config as C
    from training import train as T

    print(
        f"backend {keras.backend.backend()}, keras {keras.__version__}, device: {device_description()}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in model_names():
            cfg = C.apply_overrides(C.load_config(name), epochs=epochs, early_stopping_patience=0)
            t0 = time.perf_counter()
            p = T.prepare(name, cfg, T.load_dataset(name, data_dir, cache_dir))
            load_s = time.perf_counter() - t0
            res = T.fit(p, cfg, Path(tmp) / name, verbose=0)
            rows.append((name, load_s, res.epoch_times, res.history))
    print(f"\n{'model':<8} {'data s':>7}  per-epoch seconds (first includes compilation)   last val metric")
    for name, load_s, times, hist in rows:
        key = "val_mae" if get_card(name).task.kind == "regression" else "val_accuracy"
        print(
            f"{name:<8} {load_s:7.2f}  {' '.join(f'{t:6.2f}' for t in times):<44} {key} {hist[key][-1]:.4f}"
        )
        if len(times) > 1:
            print(f"{'':<8} {'':>7}  steady-state mean {np.mean(times[1:]):.2f} s/epoch")
    return 0
