"""Per-request routing choices and shadow disagreement, as pure functions.

The request path calls these with the routing a worker applied (:mod:`serving.routing_state`):

- :func:`choose`: which version answers: the canary with probability ``percent`` / 100, else
  stable. A request carrying a routing key (``X-Routing-Key``) is placed by a hash of the model
  name and the key instead of a coin, so one key always gets the same version for as long as the
  routing stays the same (and keeps it when the percent grows: a bucket below P stays below).
- :func:`shadow_sampled`: whether the shadow version also scores this request (after the answer).
- :func:`disagreement`: how a shadow's raw outputs differ from the answer's, per task kind.

Hand-written because it is a few lines of arithmetic over hashlib and NumPy, and it has to be
stable across processes and replicas (Python's ``hash()`` is salted per process).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np

from dlqr.routing import Routing

#: Resolution of the routing-key buckets: 0.01 %.
BUCKETS = 10_000
STABLE, CANARY = "stable", "canary"


def key_bucket(model: str, key: str) -> int:
    """A routing key's bucket in [0, BUCKETS): the same on every worker and replica."""
    digest = hashlib.sha256(f"{model}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose(model: str, routing: Routing | None, key: str | None = None,
           rng: random.Random | None = None) -> tuple[str | None, str]:  # fmt: skip
    """(version, role) for one request: role ``canary`` or ``stable`` (version None: no routing)."""
    if routing is None:
        return None, STABLE
    canary = routing.canary
    if canary is None:
        return routing.stable, STABLE
    if key:
        hit = key_bucket(model, key) < canary.percent * BUCKETS / 100
    else:
        hit = (rng or random).random() * 100 < canary.percent
    return (canary.version, CANARY) if hit else (routing.stable, STABLE)


def shadow_sampled(routing: Routing | None, rng: random.Random | None = None) -> str | None:
    """The shadow version when this request is in the sampled share, else None."""
    if routing is None or routing.shadow is None:
        return None
    return routing.shadow.version if (rng or random).random() * 100 < routing.shadow.percent else None


def disagreement(kind: str, primary: np.ndarray, shadow: np.ndarray, prep: dict[str, Any]) -> dict[str, Any]:
    """How the shadow's raw outputs differ from the answer's, row by row.

    multiclass: ``label_differs`` (bool per row); binary: ``decision_flips`` (bool per row, each
    version at its own threshold when ``prep['shadow_threshold']`` is given) and ``prob_diff``
    (absolute difference of the probabilities); regression: ``abs_diff`` in the model's units
    (each version's target scaler undone: ``prep['shadow_target_scaler']`` for the shadow's).
    """
    primary, shadow = np.asarray(primary, np.float64), np.asarray(shadow, np.float64)
    if kind == "multiclass":
        return {"label_differs": np.argmax(primary, axis=1) != np.argmax(shadow, axis=1)}
    if kind == "binary":
        t_primary = float(prep["threshold"]["value"])
        t_shadow = float(prep.get("shadow_threshold", t_primary))
        p, s = primary[:, 0], shadow[:, 0]
        return {"decision_flips": (p >= t_primary) != (s >= t_shadow), "prob_diff": np.abs(p - s)}
    p = _model_units(primary[:, 0], prep["target_scaler"])
    s = _model_units(shadow[:, 0], prep.get("shadow_target_scaler", prep["target_scaler"]))
    return {"abs_diff": np.abs(p - s)}


def _model_units(raw: np.ndarray, scaler: dict[str, Any]) -> np.ndarray:
    """A regression network's raw output in the model's units (its target scaler undone)."""
    scale = float(np.asarray(scaler["scale"]).reshape(-1)[0])
    mean = float(np.asarray(scaler.get("mean", 0.0)).reshape(-1)[0])
    return raw * scale + mean
