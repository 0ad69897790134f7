"""Pre- and post-processing as small pure functions over NumPy arrays.

Training uses the same functions to compute the golden input -> output pairs
it stores in each bundle, so serving's self-test checks the whole chain
(API-unit input -> scaled model input -> model -> API prediction), not just
the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serving.spec import TASKS


def standardize(x: np.ndarray, mean: Sequence[float] | float, scale: Sequence[float] | float) -> np.ndarray:
    """(x - mean) / scale, as float32 (what the network was trained on)."""
    x = np.asarray(x, dtype=np.float64)
    return ((x - np.asarray(mean, dtype=np.float64)) / np.asarray(scale, dtype=np.float64)).astype(np.float32)


def unstandardize(y: np.ndarray, mean: float, scale: float) -> np.ndarray:
    """Inverse of :func:`standardize` for a scalar target, in float64."""
    return np.asarray(y, dtype=np.float64) * float(scale) + float(mean)


def apply_threshold(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean decision ``prob >= threshold`` (the operating point is inclusive)."""
    return np.asarray(prob, dtype=np.float64) >= float(threshold)


def argmax_with_confidence(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the top class and its probability, row-wise."""
    probs = np.asarray(probs, dtype=np.float64)
    idx = np.argmax(probs, axis=1)
    return idx, probs[np.arange(len(probs)), idx]


def log_abs_fft(raw: np.ndarray) -> np.ndarray:
    """``log(1 + |FFT(row)|)`` of every row, in float64: a row's log amplitude spectrum.

    The full spectrum is kept (the mirrored bins of a real signal included), so
    the output has as many columns as the input and the scaler, the network and
    the input checks keep the spec's dimension. Deterministic (NumPy's pocketfft).
    """
    return np.log1p(np.abs(np.fft.fft(np.asarray(raw, dtype=np.float64), axis=1)))


#: Declarative input transforms, named by ``preprocessing.json["input_transform"]["type"]``
#: and applied to the API-unit input before the input scaler.
INPUT_TRANSFORMS = {"log_abs_fft": log_abs_fft}


def apply_input_transform(raw: np.ndarray, transform: Mapping[str, Any] | None) -> np.ndarray:
    """The bundle's input transform applied to ``raw`` (float64), or ``raw`` unchanged if none."""
    if not transform:
        return raw
    try:
        fn = INPUT_TRANSFORMS[transform["type"]]
    except KeyError:
        raise ValueError(f"unknown input_transform {transform.get('type')!r}") from None
    return fn(raw)


def model_input(name: str, raw: np.ndarray, prep: Mapping[str, Any]) -> np.ndarray:
    """Turn an (n, d) array in API units into the float32 array the network expects."""
    raw = apply_input_transform(np.asarray(raw, dtype=np.float64), prep.get("input_transform"))
    scaler = prep["input_scaler"]
    if scaler["type"] == "standard":
        log_cols = scaler.get("log1p") or []
        if log_cols:
            # Right-skewed concentrations are compressed with log1p before scaling
            # (validated inputs are >= 0, so log1p is always defined).
            raw = raw.copy()
            raw[:, log_cols] = np.log1p(raw[:, log_cols])
        return standardize(raw, scaler["mean"], scaler["scale"])
    if scaler["type"] == "divide":
        return (raw / float(scaler["divisor"])).astype(np.float32)
    raise ValueError(f"{name}: unknown input scaler type {scaler['type']!r}")


def postprocess(name: str, outputs: np.ndarray, prep: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Map raw network outputs (n, k) to the API's prediction objects, in order."""
    outputs = np.asarray(outputs, dtype=np.float64)
    task = TASKS[name]
    if task == "regression":
        ts = prep["target_scaler"]
        values = unstandardize(outputs[:, 0], ts["mean"], ts["scale"])
        return [{prep["target"]: float(v)} for v in values]
    if task == "binary":
        t = float(prep["threshold"]["value"])
        p = outputs[:, 0]
        decisions = apply_threshold(p, t)
        return [
            {"probability": float(pi), "seizure": bool(di), "threshold": t}
            for pi, di in zip(p, decisions, strict=True)
        ]
    if task == "multiclass":
        idx, conf = argmax_with_confidence(outputs)
        return [
            {"digit": int(i), "confidence": float(c), "probabilities": [float(v) for v in row]}
            for i, c, row in zip(idx, conf, outputs, strict=True)
        ]
    raise ValueError(f"unknown task {task!r}")


def instance_to_row(name: str, instance: Mapping[str, Any], prep: Mapping[str, Any]) -> list[float]:
    """Flatten one API instance (already validated) into a row in feature order.

    wine: {feature: value}; seizure: {"eeg": [...]}; digit: {"pixels": [...] or 28x28}.
    """
    if name == "wine":
        return [float(instance[f]) for f in prep["features"]]
    if name == "seizure":
        return [float(v) for v in instance["eeg"]]
    if name == "digit":
        pixels = np.asarray(instance["pixels"], dtype=np.float64).reshape(-1)
        return pixels.tolist()
    raise ValueError(f"unknown model {name!r}")
