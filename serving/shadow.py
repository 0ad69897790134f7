"""Shadow scoring: a sampled share of requests is also scored by the shadow version, after the answer.

:class:`ShadowScorer` is a data-plane observer (:meth:`serving.dataplane.DataPlane.add_observer`).
Observers run on the data plane's observer thread, fed by a bounded queue: in the gevent worker
that is a real OS thread (the worker patches everything but threads), so the shadow's ONNX
Runtime run, which releases the GIL, runs beside the event loop instead of inside it. The
answer was built before the observation is published; the shadow never changes it, and never
delays it beyond sharing the CPU. For each observation of a model whose applied routing has a
shadow (:mod:`serving.routing_state`):

- requests that named a version (``?version=``, ``/versions/<v>/``) are not shadowed;
- the request is sampled with the shadow's percent (:func:`serving.traffic.shadow_sampled`);
- when the worker is at its in-flight limit (``DLQR_MAX_INFLIGHT``) the shadow run is skipped,
  and counted (``outcome="skipped_busy"``);
- the shadow version scores the same rows; an error (or a non-finite output) is counted
  (``outcome="failed"``) and logged, never shown to a client;
- how the two versions disagree is recorded per task (:func:`serving.traffic.disagreement`).

Metrics (labels: ``model``, ``version`` = the shadow version, ``against`` = the version that
answered; both are versions the routing names, so the label set stays bounded):

- ``dlqr_shadow_requests_total{outcome}``: scored, skipped_busy, failed, unavailable (the
  shadow version is not loaded in this worker);
- ``dlqr_shadow_rows_total`` and ``dlqr_shadow_disagreements_total``: rows compared and rows
  whose class label (multiclass) or decision (binary, each version at its own threshold) differs;
- ``dlqr_shadow_probability_difference``: histogram of |p_answer - p_shadow| (binary);
- ``dlqr_shadow_absolute_difference``: histogram of |y_answer - y_shadow| in the model's units
  (regression);
- ``dlqr_shadow_latency_seconds``: the shadow's scaling + network run, once per run (the sampled
  requests of one burst of observations are stacked into one run).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from serving import traffic
from serving.dataplane import Observation
from serving.metrics import INFERENCE_BUCKETS, PREFIX, Metrics

log = logging.getLogger(__name__)

#: |p_answer - p_shadow| of a binary model.
PROBABILITY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
#: |y_answer - y_shadow| of a regression model, in its units (% vol for wine).
ABSOLUTE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("scored", "skipped_busy", "failed", "unavailable")


class ShadowMetrics:
    """The ``dlqr_shadow_*`` metrics, in the app's registry (None: the multi-process files)."""

    def __init__(self, registry: Any = None):
        from prometheus_client import Counter, Histogram

        reg = {"registry": registry}
        labels = ["model", "version", "against"]
        self.requests = Counter(PREFIX + "shadow_requests", "Sampled requests by what the shadow did: "
                                "scored, skipped_busy (worker at DLQR_MAX_INFLIGHT), failed, unavailable.",
                                [*labels, "outcome"], **reg)  # fmt: skip
        self.rows = Counter(PREFIX + "shadow_rows", "Rows scored by the shadow version.", labels, **reg)
        self.disagreements = Counter(
            PREFIX + "shadow_disagreements",
            "Shadow-scored rows whose class label (multiclass) or decision (binary) differs from the answer.",
            labels, **reg,
        )  # fmt: skip
        self.probability_difference = Histogram(
            PREFIX + "shadow_probability_difference",
            "Absolute difference between the answer's and the shadow's probability (binary models).",
            labels, buckets=PROBABILITY_BUCKETS, **reg,
        )  # fmt: skip
        self.absolute_difference = Histogram(
            PREFIX + "shadow_absolute_difference",
            "Absolute difference between the answer's and the shadow's value, in the model's units "
            "(regression models).",
            labels, buckets=ABSOLUTE_BUCKETS, **reg,
        )  # fmt: skip
        self.latency = Histogram(
            PREFIX + "shadow_latency_seconds", "The shadow version's scaling and network run, per (stacked) run.",
            labels, buckets=INFERENCE_BUCKETS, **reg,
        )  # fmt: skip


def record(metrics: ShadowMetrics, labels: tuple[str, str, str], kind: str, measure: dict[str, np.ndarray],
           seconds: float, requests: int = 1) -> None:  # fmt: skip
    """Count one shadow run's disagreement (``measure``: :func:`traffic.disagreement`) over the rows
    of ``requests`` scored requests; ``seconds`` is the run's latency."""
    n = len(next(iter(measure.values())))
    metrics.requests.labels(*labels, "scored").inc(requests)
    metrics.rows.labels(*labels).inc(n)
    metrics.latency.labels(*labels).observe(seconds)
    differs = measure.get("label_differs", measure.get("decision_flips"))
    if differs is not None:
        metrics.disagreements.labels(*labels).inc(int(np.count_nonzero(differs)))
    if "prob_diff" in measure:
        Metrics.observe_many(metrics.probability_difference.labels(*labels), measure["prob_diff"].tolist())
    if "abs_diff" in measure:
        Metrics.observe_many(metrics.absolute_difference.labels(*labels), measure["abs_diff"].tolist())


class ShadowScorer:
    """The observer; ``busy()`` tells whether the worker is at its in-flight limit now."""

    def __init__(self, registry: Any, metrics: ShadowMetrics, busy: Callable[[], bool] = lambda: False,
                 rng: random.Random | None = None):  # fmt: skip
        self.registry = registry
        self.metrics = metrics
        self.busy = busy
        self.rng = rng
        self.installed = False

    def install_when_needed(self, plane: Any, state: Any) -> None:
        """Register with the data plane the first time a model's routing names a shadow (so a
        service that never shadows publishes no observation for it)."""
        routing = getattr(state, "routing", None)
        if not self.installed and routing is not None and routing.shadow is not None:
            self.installed = True
            plane.add_observer(self)

    def __call__(self, obs: Observation) -> None:
        self.observe_many([obs])

    def observe_many(self, batch: list[Observation]) -> None:
        """Score a burst of observations: the sampled rows of each (model, shadow, answering version)
        are stacked into one ONNX Runtime run, which costs far less per row than a run per request."""
        groups: dict[tuple[str, str, str], list[Observation]] = {}
        models: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        for obs in batch:
            if obs.asked_version is not None or obs.door == "offline":
                continue
            state = self.registry.states.get(obs.model)
            routing = getattr(state, "routing", None)
            version = traffic.shadow_sampled(routing, self.rng)
            if version is None or version == obs.version:
                continue
            labels = (obs.model, version, obs.version)
            if self.busy():
                self.metrics.requests.labels(*labels, "skipped_busy").inc()
                continue
            shadow = state.versions.get(version)
            primary = state.versions.get(obs.version)
            if (
                shadow is None
                or shadow.model is None
                or not shadow.ready
                or primary is None
                or primary.model is None
            ):
                self.metrics.requests.labels(*labels, "unavailable").inc()
                continue
            groups.setdefault(labels, []).append(obs)
            models[labels] = (shadow.model, primary.model)
        for labels, group in groups.items():
            self._score(labels, group, *models[labels])

    def _score(
        self, labels: tuple[str, str, str], group: list[Observation], model: Any, primary: Any
    ) -> None:
        try:
            rows = group[0].rows if len(group) == 1 else np.concatenate([o.rows for o in group])
            answered = group[0].outputs if len(group) == 1 else np.concatenate([o.outputs for o in group])
            t0 = time.perf_counter()
            # model.forward, not the data plane's runner: this is another thread, and a runner may
            # batch across the worker's greenlets.
            out = np.asarray(model.forward(model.model_input(rows)), dtype=np.float64)
            seconds = time.perf_counter() - t0
            if out.shape != answered.shape or not np.isfinite(out).all():
                raise ValueError(f"shadow output of shape {out.shape} is not finite or not {answered.shape}")
            kind = model.card.task.kind
            prep = dict(primary.prep)
            if kind == "binary":
                prep["shadow_threshold"] = model.prep["threshold"]["value"]
            elif kind == "regression":
                prep["shadow_target_scaler"] = model.prep["target_scaler"]
            measure = traffic.disagreement(kind, answered, out, prep)
        except Exception as exc:  # the shadow's failure is its own: counted and logged, never answered
            self.metrics.requests.labels(*labels, "failed").inc(len(group))
            log.warning("shadow %s of %s failed: %s: %s", labels[1], labels[0], type(exc).__name__, exc,
                        extra={"event": "shadow_failed", "model": labels[0], "version": labels[1],
                               "request_ids": [o.request_id for o in group]})  # fmt: skip
            return
        record(self.metrics, labels, kind, measure, seconds, requests=len(group))


__all__ = ["ShadowMetrics", "ShadowScorer", "record"]
