"""Reference profiles and drift statistics, shared by training and serving.

A bundle's ``reference.json`` describes what the model saw in training, so the
service can tell when live traffic stops looking like it:

- **profiled features**: the card's input features, or for a card with a
  ``profile`` function (digit) a few per-row summaries instead (per-pixel PSI
  means nothing): :func:`profile_rows`;
- per profiled feature: bin edges at the training deciles, the training count
  in each bin, min, max and 101 percentiles (for a Kolmogorov-Smirnov statistic);
- the prediction distribution: regression values and binary probabilities are
  binned like a numeric feature (a binary profile adds the positive rate at the
  bundle's threshold); a multiclass profile is the class mix.

Training (:func:`build_reference`) and serving (:mod:`serving.monitor`) bin
with the same functions here, so a row lands in the same bin in both.
Everything is NumPy: no SciPy on the serving path (the tests check the numbers
against ``scipy.stats``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlqr import processing

REFERENCE_FILE = "reference.json"
REFERENCE_FORMAT = 1
#: Interior cut points of the reference bins: the training deciles.
DECILES = tuple(i / 10 for i in range(1, 10))
#: Percentiles stored per numeric feature: the reference CDF for the KS statistic.
PERCENTILES = tuple(range(101))
#: Floor of a bin's share in PSI, so an empty bin counts as very unlikely, not impossible.
PSI_EPSILON = 1e-4
PREDICTION = "prediction"

# ------------------------------------------------------------- image summaries

#: Per-image summaries profiled instead of pixels (named on the digit card).
IMAGE_SUMMARIES = (
    "mean_intensity",
    "ink_fraction",
    "centre_of_mass_x",
    "centre_of_mass_y",
    "bbox_width",
    "bbox_height",
)
#: A pixel at or above half of full scale is ink (MNIST digits are white on black).
INK_LEVEL = 0.5


def image_summaries(rows: np.ndarray, shape: tuple[int, int], pixel_max: float) -> np.ndarray:
    """(n, h*w) pixels -> (n, 6) summaries in :data:`IMAGE_SUMMARIES` order.

    Mean intensity and ink fraction in 0..1; centre of mass (intensity-weighted) in
    pixels from the top-left (the image centre for a blank image); bounding box of
    the ink in pixels (0 for no ink).
    """
    h, w = shape
    x = np.asarray(rows, dtype=np.float64).reshape(-1, h, w) / float(pixel_max)
    n = len(x)
    total = x.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    cx = np.where(total > 0, (x.sum(axis=1) * np.arange(w)).sum(axis=1) / safe, (w - 1) / 2)
    cy = np.where(total > 0, (x.sum(axis=2) * np.arange(h)).sum(axis=1) / safe, (h - 1) / 2)
    ink = x >= INK_LEVEL
    cols, rws = ink.any(axis=1), ink.any(axis=2)

    def extent(m: np.ndarray, size: int) -> np.ndarray:
        anyink = m.any(axis=1)
        first = np.argmax(m, axis=1)
        last = size - 1 - np.argmax(m[:, ::-1], axis=1)
        return np.where(anyink, last - first + 1, 0).astype(np.float64)

    out = np.empty((n, len(IMAGE_SUMMARIES)))
    out[:, 0] = x.mean(axis=(1, 2))
    out[:, 1] = ink.mean(axis=(1, 2))
    out[:, 2], out[:, 3] = cx, cy
    out[:, 4], out[:, 5] = extent(cols, w), extent(rws, h)
    return out


def profile_names(card: Any) -> tuple[str, ...]:
    """The names of the profiled features of a card: its summaries, else its input features."""
    return tuple(card.profile_features) if card.profile is not None else tuple(card.features)


def profile_rows(card: Any, rows: np.ndarray, features: Sequence[str] | None = None) -> np.ndarray:
    """(n, d) API-unit rows in the bundle's feature order -> (n, k) profiled values."""
    rows = np.asarray(rows, dtype=np.float64)
    if card.profile is not None:
        return card.profile(rows)
    if features is not None and tuple(features) != tuple(card.features):
        order = [list(features).index(f) for f in card.features]
        rows = rows[:, order]
    return rows


def prediction_values(kind: str, outputs: np.ndarray, prep: Mapping[str, Any]) -> np.ndarray:
    """Raw network outputs -> what the prediction profile bins: value, probability or class index."""
    out = np.asarray(outputs, dtype=np.float64)
    if kind == "regression":
        ts = prep["target_scaler"]
        return processing.unstandardize(out[:, 0], ts["mean"], ts["scale"])
    if kind == "binary":
        return out[:, 0]
    return np.argmax(out, axis=1).astype(np.float64)


# ------------------------------------------------------------------ binning


def decile_edges(values: np.ndarray) -> np.ndarray:
    """Bin edges at the deciles of ``values`` (repeated cut points merged)."""
    return np.unique(np.quantile(np.asarray(values, dtype=np.float64), DECILES))


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: bin i holds ``edges[i-1] < v <= edges[i]`` (open-ended first and last)."""
    return np.searchsorted(edges, values, side="left")


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin (``len(edges) + 1`` bins)."""
    return np.bincount(bin_index(values, edges), minlength=len(edges) + 1)


def psi(reference: np.ndarray, current: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index of two count (or share) vectors over the same bins.

    ``sum((c - r) * ln(c / r))`` over the shares, each floored at ``eps``. NaN when
    either side is empty.
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.sum() <= 0 or c.sum() <= 0:
        return float("nan")
    r = np.maximum(r / r.sum(), eps)
    c = np.maximum(c / c.sum(), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_reference(percentiles: np.ndarray) -> tuple[np.ndarray, ...]:
    """The reference CDF of :func:`ks_statistic`, prepared once per feature.

    A value repeated among the percentiles is a jump of the CDF: from its first level
    (just below it) to its last (at it); between percentiles the CDF is linear.
    """
    q = np.asarray(percentiles, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, len(q))
    u, first, reps = np.unique(q, return_index=True, return_counts=True)
    below, at = levels[first], levels[first + reps - 1]
    return u, below, at, np.repeat(u, 2), np.column_stack([below, at]).ravel()


def ks_statistic(percentiles: np.ndarray | tuple[np.ndarray, ...], values: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between ``values`` and a reference given by its percentiles.

    The reference CDF is piecewise linear between its 101 stored percentiles, so the
    figure is exact up to about 0.01 on continuous data (the tests compare it with
    ``scipy.stats.ks_2samp`` on the full reference sample). ``percentiles`` may be the
    tuple :func:`ks_reference` prepared from them.
    """
    u, below, at, xp, fp = percentiles if isinstance(percentiles, tuple) else ks_reference(percentiles)
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = len(v)
    if n == 0:
        return float("nan")
    f = np.interp(v, xp, fp, left=0.0, right=1.0)
    pos = np.minimum(np.searchsorted(u, v), len(u) - 1)
    hit = u[pos] == v
    f_at = np.where(hit, at[pos], f)
    f_below = np.where(hit, below[pos], f)
    ecdf_at = np.searchsorted(v, v, side="right") / n
    ecdf_below = np.searchsorted(v, v, side="left") / n
    return float(max(np.max(np.abs(ecdf_at - f_at)), np.max(np.abs(ecdf_below - f_below))))


# ---------------------------------------------------------------- the profile


def numeric_profile(name: str, values: np.ndarray) -> dict[str, Any]:
    """One numeric feature's reference: decile edges, counts, min, max, percentiles."""
    v = np.asarray(values, dtype=np.float64)
    edges = decile_edges(v)
    return {
        "name": name,
        "kind": "numeric",
        "edges": edges.tolist(),
        "counts": bin_counts(v, edges).tolist(),
        "min": float(v.min()),
        "max": float(v.max()),
        "percentiles": np.percentile(v, PERCENTILES).tolist(),
    }


def categorical_profile(name: str, values: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """A class mix: counts of each class index."""
    idx = np.asarray(values, dtype=np.int64)
    return {
        "name": name,
        "kind": "categorical",
        "labels": list(labels),
        "counts": np.bincount(idx, minlength=len(labels)).tolist(),
    }


def build_reference(
    card: Any, rows: np.ndarray, outputs: np.ndarray, prep: Mapping[str, Any], source: Mapping[str, Any]
) -> dict[str, Any]:
    """The reference profile of training rows (API units) and the network's outputs on them."""
    values = profile_rows(card, rows, prep.get("features"))
    names = profile_names(card)
    kind = card.task.kind
    pred = prediction_values(kind, outputs, prep)
    if kind == "multiclass":
        labels = prep.get("class_labels") or [str(i) for i in range(np.asarray(outputs).shape[1])]
        prediction = categorical_profile(PREDICTION, pred, labels)
    else:
        prediction = numeric_profile(PREDICTION, pred)
        if kind == "binary":
            t = float(prep["threshold"]["value"])
            prediction["threshold"] = t
            prediction["positive_rate"] = float(np.mean(processing.apply_threshold(pred, t)))
        else:
            prediction["quantiles"] = {
                str(q): float(np.quantile(pred, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)
            }
    return {
        "format": REFERENCE_FORMAT,
        "model": card.name,
        "task": kind,
        "profile": "summaries" if card.profile is not None else "inputs",
        "source": dict(source),
        "rows": int(len(values)),
        "features": [numeric_profile(n, values[:, i]) for i, n in enumerate(names)],
        "prediction": prediction,
    }


@dataclass(frozen=True)
class FeatureRef:
    """One profiled feature (or the prediction) ready for binning."""

    name: str
    numeric: bool
    edges: np.ndarray  #: empty for a categorical profile
    counts: np.ndarray
    percentiles: np.ndarray | None
    ks: tuple[np.ndarray, ...] | None = None  #: :func:`ks_reference` of the percentiles

    @property
    def n_bins(self) -> int:
        return len(self.counts)

    def bins(self, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` in this feature's bins."""
        if self.numeric:
            return bin_counts(values, self.edges)
        idx = np.clip(np.asarray(values, dtype=np.int64), 0, self.n_bins - 1)
        return np.bincount(idx, minlength=self.n_bins)


@dataclass(frozen=True)
class Reference:
    """A parsed ``reference.json``."""

    model: str
    task: str
    rows: int
    features: tuple[FeatureRef, ...]
    prediction: FeatureRef
    doc: Mapping[str, Any]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


class ReferenceError(ValueError):
    """A reference.json that cannot be used."""


def _feature(doc: Mapping[str, Any]) -> FeatureRef:
    numeric = doc["kind"] == "numeric"
    counts = np.asarray(doc["counts"], dtype=np.float64)
    edges = np.asarray(doc.get("edges") or [], dtype=np.float64)
    if numeric and len(counts) != len(edges) + 1:
        raise ReferenceError(f"feature {doc['name']}: {len(counts)} counts for {len(edges)} edges")
    pct = np.asarray(doc["percentiles"], dtype=np.float64) if numeric and doc.get("percentiles") else None
    return FeatureRef(
        str(doc["name"]), numeric, edges, counts, pct, ks_reference(pct) if pct is not None else None
    )


def parse_reference(doc: Mapping[str, Any]) -> Reference:
    """Validate and parse a reference document; raises :class:`ReferenceError`."""
    try:
        if doc.get("format") != REFERENCE_FORMAT:
            raise ReferenceError(f"unknown reference format {doc.get('format')!r}")
        return Reference(
            model=str(doc["model"]),
            task=str(doc["task"]),
            rows=int(doc["rows"]),
            features=tuple(_feature(f) for f in doc["features"]),
            prediction=_feature(doc["prediction"]),
            doc=doc,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ReferenceError):
            raise
        raise ReferenceError(f"malformed reference: {type(exc).__name__}: {exc}") from None
