"""Prometheus metrics, correct across Gunicorn workers.

Under Gunicorn every worker is a separate process, so an in-memory registry
would make each scrape show one random worker's numbers (KServe #2979,
BentoML #5056). ``gunicorn.conf.py`` therefore prepares
``PROMETHEUS_MULTIPROC_DIR`` before anything imports ``prometheus_client``;
each worker writes its samples to memory-mapped files there and ``/metrics``
aggregates all of them. Without that variable (the Flask test client, a
single process) an app-local registry is used instead.

``prometheus_client`` is imported only from :func:`init_app`, never at module
import, so the multi-process directory is always set first.

Metric names are a contract with the alert rules in ``deploy/``; they follow
Prometheus naming with the application prefix :data:`PREFIX` (``docs/metrics.md``
lists them, and the names they replace).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from flask import Flask, Response

from dlqr.card import ModelCard

#: Request latency: 0.5 ms .. 5 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Network forward pass only: 50 us .. 1 s.
INFERENCE_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


#: Every metric name starts with this (Prometheus naming: one prefix per application).
PREFIX = "dlqr_"
#: Task kind -> the histogram its scalar prediction goes to: probabilities and values in a
#: model's units (% vol) never share a histogram.
SCALAR_METRIC = {"binary": "probability", "regression": "value"}


def predicted_value_buckets(cards: Sequence[ModelCard], kind: str | None = None) -> tuple[float, ...]:
    """Buckets of one scalar-prediction histogram: the union of what the served tasks (of that
    ``kind``, or all) declare; each model only fills its own range."""
    bounds = {b for c in cards if kind is None or c.task.kind == kind for b in (c.task.value_buckets or ())}
    return tuple(sorted(bounds)) or (0.5, 1.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """All service metrics; label children for the hot path are resolved once."""

    def __init__(self, cards: Sequence[ModelCard]) -> None:
        mp_dir = multiprocess_dir()
        if mp_dir:
            os.makedirs(mp_dir, exist_ok=True)
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        # *_created series double the exposition size for no use here (multi-process mode has none).
        disable_created_metrics()

        self.multiprocess = bool(mp_dir)
        # Multi-process: samples live in files and a registry is built per scrape.
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        reg: dict[str, Any] = {"registry": self.registry}
        self.http_requests = Counter(
            PREFIX + "http_requests",
            "HTTP requests by endpoint, method and status.",
            ["endpoint", "method", "status"],
            **reg,
        )
        self.request_duration = Histogram(
            PREFIX + "http_request_duration_seconds",
            "Latency of every request in the app, by endpoint, method and model (empty: no model).",
            ["endpoint", "method", "model"],
            buckets=LATENCY_BUCKETS,
            **reg,
        )
        self.inference = Histogram(
            PREFIX + "model_inference_seconds", "Forward-pass time per request, by model.", ["model"],
            buckets=INFERENCE_BUCKETS, **reg,
        )  # fmt: skip
        self.batch_size = Histogram(
            PREFIX + "model_batch_size",
            "Instances per /predict request, by model.",
            ["model"],
            buckets=BATCH_BUCKETS,
            **reg,
        )
        # Adaptive batching (serving/batching.py): one observation per model run, or per request.
        self.batch_rows = Histogram(
            PREFIX + "model_batch_rows", "Rows per model run (adaptive batching joins requests), by model.",
            ["model"], buckets=BATCH_BUCKETS, **reg,
        )  # fmt: skip
        self.batch_requests = Histogram(
            PREFIX + "model_batch_requests", "Requests per model run (1: ran alone), by model.",
            ["model"], buckets=BATCH_BUCKETS, **reg,
        )  # fmt: skip
        self.batch_queue_wait = Histogram(
            PREFIX + "model_batch_queue_wait_seconds",
            "Time a request waited for its batched model run to start, by model.",
            ["model"], buckets=LATENCY_BUCKETS, **reg,
        )  # fmt: skip
        self.predictions = Counter(
            PREFIX + "model_predictions",
            "Predictions by outcome: binary positive/negative, multiclass class label, regression 'value'.",
            ["model", "outcome"],
            **reg,
        )
        self.predicted = {
            kind: Histogram(
                PREFIX + "model_predicted_" + metric,
                "Predicted probability of the positive class (binary models)." if metric == "probability"
                else "Predicted value in the model's units (regression models, e.g. % vol).",
                ["model"],
                buckets=predicted_value_buckets(cards, kind),
                **reg,
            )
            for kind, metric in SCALAR_METRIC.items()
            if any(c.task.kind == kind for c in cards)
        }  # fmt: skip
        self.out_of_range = Counter(
            PREFIX + "input_out_of_range",
            "Input values outside the training min/max (still served): a drift signal.",
            ["model", "feature"],
            **reg,
        )
        self.model_info = Gauge(
            PREFIX + "model_info", "Loaded bundle (value 1) by model, version and the served model.onnx sha256.",
            ["model", "version", "sha256"], multiprocess_mode="livemax", **reg,
        )  # fmt: skip
        self.model_ready = Gauge(
            PREFIX + "model_ready",
            "1 when the model is verified, loaded and self-tested (minimum over live workers).",
            ["model"],
            multiprocess_mode="livemin",
            **reg,
        )
        self.model_refused = Counter(
            PREFIX + "model_refused",
            "Model versions refused at load (verification, card check or self-test), by model; each "
            "worker that refuses a version counts it once.",
            ["model"],
            **reg,
        )
        self.routing_invalid = Gauge(
            "dlqr_routing_invalid",
            "1 while the model's routing.json is not applied (malformed, or names a missing version); "
            "the last good routing stays (maximum over live workers).",
            ["model"], multiprocess_mode="livemax", **reg,
        )  # fmt: skip
        # Labelled by version: only the versions this process serves (under the routing policy, the
        # ones routing.json names), so the label set stays bounded; see observe_version.
        self.version_requests = Counter(
            PREFIX + "model_version_requests",
            "Answered prediction requests by model and the version that answered (stable, canary or "
            "a version the request named); only versions served now.",
            ["model", "version"],
            **reg,
        )
        self.version_latency = Histogram(
            PREFIX + "model_version_latency_seconds",
            "Prediction latency (request start to the answer built) by model and answering version.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            **reg,
        )
        self._version_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._info_labels: dict[str, set[tuple[str, str]]] = {}
        self._req_children: dict[tuple[str, str, str], Any] = {}
        self._duration_children: dict[tuple[str, str, str], Any] = {}
        self._range_features: dict[str, tuple[str, ...]] = {}
        self.names = tuple(c.name for c in cards)
        self._tasks = {c.name: c.task for c in cards}
        self._per_model = {
            c.name: {
                "inference": self.inference.labels(c.name),
                "batch": self.batch_size.labels(c.name),
                "run_rows": self.batch_rows.labels(c.name),
                "run_requests": self.batch_requests.labels(c.name),
                "queue_wait": self.batch_queue_wait.labels(c.name),
                # no empty series for a task without a scalar value (multiclass)
                "value": self.predicted[c.task.kind].labels(c.name)
                if c.task.value_buckets and c.task.kind in self.predicted
                else None,
            }
            for c in cards
        }
        self._outcomes = {
            c.name: {k: self.predictions.labels(c.name, k) for k in c.task.outcome_labels()} for c in cards
        }
        for name in self.names:
            self.model_ready.labels(name).set(0)

    # ----------------------------------------------------------------- hot path

    @staticmethod
    def observe_many(child: Any, values: list[float]) -> None:
        """``child.observe(v)`` for every value, with one write per touched bucket.

        A batch of 256 predictions would otherwise cost 512 locked writes to the
        multi-process files. prometheus_client has no bulk API, so this uses the
        histogram child's ``_upper_bounds``/``_buckets``/``_sum`` (stable since 0.4;
        tests/serving/test_metrics.py pins the equivalence with ``observe``).
        """
        if len(values) < 4 or not hasattr(child, "_buckets"):
            for v in values:
                child.observe(v)
            return
        bounds = child._upper_bounds
        # bucket i holds bounds[i-1] < v <= bounds[i], as observe() assigns it
        counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
        child._sum.inc(float(sum(values)))
        for i in np.flatnonzero(counts):
            child._buckets[i].inc(int(counts[i]))

    def observe_request(
        self, endpoint: str, method: str, status: int, model: str | None, seconds: float
    ) -> None:
        key = (endpoint, method, str(status))
        child = self._req_children.get(key)
        if child is None:
            child = self._req_children[key] = self.http_requests.labels(*key)
        child.inc()
        key = (endpoint, method, model or "")
        duration = self._duration_children.get(key)
        if duration is None:
            duration = self._duration_children[key] = self.request_duration.labels(*key)
        duration.observe(seconds)

    def observe_prediction(self, model: str, batch: int, inference_seconds: float, preds: list[dict]) -> None:
        m = self._per_model[model]
        m["batch"].observe(batch)
        m["inference"].observe(inference_seconds)
        task = self._tasks[model]
        outcomes = self._outcomes[model]
        for label, count in task.outcomes(preds).items():
            if count:
                outcomes[label].inc(count)
        if m["value"] is not None:
            self.observe_many(m["value"], task.values(preds) or [])

    def observe_version(self, model: str, version: str, seconds: float) -> None:
        """One answered request of ``version``; a version not served now counts as ``other``."""
        key = (model, version)
        children = self._version_children.get(key)
        if children is None:
            served = {v for v, _ in self._info_labels.get(model, ())}
            label = (model, version if version in served else "other")
            children = (self.version_requests.labels(*label), self.version_latency.labels(*label))
            if label[1] != "other":  # "other" is re-checked, in case the version is served later
                self._version_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, model: str, rows: int, requests: int, waits: list[float]) -> None:
        """One model run: its rows and requests, and each request's wait in the batching queue."""
        m = self._per_model.get(model)
        if m is None:  # a model this app does not serve (never on the request path)
            return
        m["run_rows"].observe(rows)
        m["run_requests"].observe(requests)
        self.observe_many(m["queue_wait"], waits)

    def observe_ranges(self, model: str, features: tuple[str, ...], raw: np.ndarray, lo, hi) -> None:
        """Count every input value outside the training range, per feature."""
        if lo is None:
            return
        if self._range_features.get(model) != features:  # first use: every feature's series at 0
            self.declare_ranges(model, features)
        counts = ((raw < lo) | (raw > hi)).sum(axis=0)
        for j in np.flatnonzero(counts):
            self.out_of_range.labels(model, features[j]).inc(int(counts[j]))

    def declare_ranges(self, model: str, features: Sequence[str]) -> None:
        """Create ``dlqr_input_out_of_range_total`` at 0 for each feature with a training range, so the
        series exist (and ``rate()`` works) before the first out-of-range value."""
        for feature in features:
            self.out_of_range.labels(model, feature).inc(0)
        self._range_features[model] = tuple(features)

    # -------------------------------------------------------------- model state

    def set_served_versions(self, name: str, ready: bool, served: Sequence[tuple[str, str]]) -> None:
        """``model_ready`` and ``model_info``: 1 for each (version, onnx sha256) served now, 0 for
        the ones this process served before and no longer does (hot swap, removal)."""
        self.model_ready.labels(name).set(1 if ready else 0)
        now = set(served)
        for version, sha in self._info_labels.get(name, set()) - now:
            self.model_info.labels(name, version, sha).set(0)
        for version, sha in now:
            self.model_info.labels(name, version, sha).set(1)
        self._info_labels[name] = now

    def cluster_not_ready(self, expected_workers: int) -> str | None:
        """Why not every Gunicorn worker is ready yet, or None (single-process: always None).

        /readyz is answered by whichever worker takes the request; without this
        a pod could turn ready while its other workers still return 503.
        Each worker writes ``model_ready`` (0 until loaded) to its own file in
        the multi-process directory, so the files tell how many workers have
        started and the livemin aggregate whether all of them are ready.
        """
        if not self.multiprocess:
            return None
        import glob

        from prometheus_client import CollectorRegistry, multiprocess

        started = len(glob.glob(os.path.join(multiprocess_dir() or "", "gauge_livemin_*.db")))
        if started < expected_workers:
            return f"{started} of {expected_workers} workers have started"
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        ready = {
            s.labels.get("model"): s.value
            for metric in registry.collect()
            if metric.name == PREFIX + "model_ready"
            for s in metric.samples
        }
        behind = sorted(m for m in self.names if ready.get(m, 0) < 1)
        if behind:
            return f"not loaded in every worker yet: {', '.join(behind)}"
        return None

    # ------------------------------------------------------------------- scrape

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def init_app(app: Flask, cards: Sequence[ModelCard]) -> Metrics:
    """Create the metrics for the served models and the GET /metrics route."""
    metrics = Metrics(cards)
    app.extensions["dlqr_metrics"] = metrics

    def scrape() -> Response:
        body, ctype = metrics.render()
        return Response(body, content_type=ctype)

    app.add_url_rule("/metrics", "metrics", scrape, methods=["GET"])
    return metrics
