"""Pre- and post-processing as small pure functions over NumPy arrays.

Everything a bundle's ``preprocessing.json`` declares is applied here, for
training (fitting, evaluation, golden pairs) and serving alike, so serving's
self-test checks the whole chain (API-unit input -> model input -> network ->
prediction), not just the network. The task objects' hot-path closures
(:mod:`dlqr.tasks`) mirror :func:`unstandardize`, :func:`apply_threshold` and
:func:`argmax_with_confidence`; tests pin them together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


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
    the input checks keep the card's dimension. Deterministic (NumPy's pocketfft).
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


def model_input(raw: np.ndarray, prep: Mapping[str, Any]) -> np.ndarray:
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
    raise ValueError(f"unknown input scaler type {scaler['type']!r}")


def check_input_scaler(prep: Mapping[str, Any], input_dim: int) -> str | None:
    """A problem with ``prep['input_scaler']`` (and ``input_transform``) for ``input_dim`` inputs, or None."""
    transform = prep.get("input_transform")
    if transform and (not isinstance(transform, Mapping) or transform.get("type") not in INPUT_TRANSFORMS):
        return f"unknown input_transform {transform!r} (known: {', '.join(INPUT_TRANSFORMS)})"
    scaler = prep.get("input_scaler") or {}
    if scaler.get("type") == "standard":
        mean, scale = np.asarray(scaler.get("mean"), float), np.asarray(scaler.get("scale"), float)
        if (
            mean.shape != (input_dim,)
            or scale.shape != mean.shape
            or not np.all(np.isfinite(scale))
            or np.any(scale == 0)
        ):
            return "input_scaler mean/scale have the wrong shape or a zero/non-finite scale"
        if any(not isinstance(c, int) or not 0 <= c < input_dim for c in scaler.get("log1p") or []):
            return "input_scaler log1p columns out of range"
        return None
    if scaler.get("type") == "divide":
        return None if float(scaler.get("divisor", 0)) > 0 else "input_scaler divisor must be > 0"
    return f"unknown input_scaler type {scaler.get('type')!r}"


def compiled(prep: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with scaler lists as float64 arrays, so per-request processing converts nothing."""
    out = dict(prep)
    scaler = dict(prep["input_scaler"])
    if scaler.get("type") == "standard":
        scaler["mean"] = np.asarray(scaler["mean"], dtype=np.float64)
        scaler["scale"] = np.asarray(scaler["scale"], dtype=np.float64)
    out["input_scaler"] = scaler
    return out
