"""In-process drift monitor: live traffic against the bundle's training reference.

An observer of the data plane (:meth:`serving.dataplane.DataPlane.add_observer`),
so it runs on the observers' background thread and never delays a request.
Per model and version it keeps a rolling **window**: it closes after
``DLQR_MONITOR_WINDOW_REQUESTS`` requests, or after ``DLQR_MONITOR_WINDOW_SECONDS``
once it holds at least ``DLQR_MONITOR_MIN_ROWS`` rows (PSI of a handful of rows
is noise, so a quiet window waits for more). For each closed window it sets:

- ``dlqr_drift_psi{model,version,feature}``: PSI of each profiled feature and of
  the predictions (``feature="prediction"``) against ``reference.json``;
- ``dlqr_drift_ks{model,version,feature}``: Kolmogorov-Smirnov distance of each
  numeric one (:func:`dlqr.drift.ks_statistic`).

Both gauges use ``livemax`` under Gunicorn: the worst live worker's last window.
Counters that Prometheus sums over workers and replicas are flushed at each
window close and at least every ``flush_seconds``:
``dlqr_drift_bin_total{model,version,feature,bin}`` (rows per reference bin),
``dlqr_drift_rows_total{model,version}`` and ``dlqr_drift_windows_total``; with
``dlqr_drift_reference_share{model,version,feature,bin}`` (the reference's share
of each bin) they give fleet-wide PSI in PromQL (``docs/monitoring.md``).

The statistics are NumPy (:mod:`dlqr.drift`, the functions training used to bin
the reference), vectorised over features: one comparison of the window's rows
against a padded edge matrix per observation.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlqr import drift

log = logging.getLogger(__name__)

#: Most bins a profiled feature has (decile edges: 9 cut points; a class mix: one per class).
_MAX_DECILE_BINS = len(drift.DECILES) + 1


@dataclass(frozen=True)
class Profile:
    """What the monitor needs of one served version: its card, preprocessing and reference."""

    card: Any
    prep: dict[str, Any]
    reference: drift.Reference
    features: tuple[str, ...]  #: the bundle's input feature order

    def __post_init__(self) -> None:
        feats = self.reference.features
        edges = np.full((len(feats), _MAX_DECILE_BINS - 1), np.inf)
        for i, f in enumerate(feats):
            edges[i, : len(f.edges)] = f.edges
        object.__setattr__(self, "_edges", edges)

    def feature_bins(self, values: np.ndarray) -> np.ndarray:
        """(n, k) profiled values -> (k, 10) counts per reference bin, all features at once."""
        edges: np.ndarray = self._edges  # type: ignore[attr-defined]
        # Bin i holds edges[i-1] < v <= edges[i] (dlqr.drift.bin_index); padded edges are +inf.
        idx = (values[:, :, None] > edges[None, :, :]).sum(axis=2)
        k = values.shape[1]
        flat = idx + np.arange(k) * _MAX_DECILE_BINS
        return np.bincount(flat.ravel(), minlength=k * _MAX_DECILE_BINS).reshape(k, _MAX_DECILE_BINS)


@dataclass
class Window:
    """Counts (and values, for KS) of one model version since the window opened."""

    started: float
    requests: int = 0
    rows: int = 0
    feature_counts: np.ndarray | None = None
    prediction_counts: np.ndarray | None = None
    values: list[np.ndarray] = field(default_factory=list)
    predictions: list[np.ndarray] = field(default_factory=list)
    #: Rows and outputs not yet binned (binned in bulk: NumPy's per-call cost dominates one row).
    raw: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    raw_rows: int = 0


@dataclass(frozen=True)
class WindowResult:
    """A closed window: PSI and KS per profiled feature (and ``prediction``)."""

    model: str
    version: str
    requests: int
    rows: int
    seconds: float
    psi: dict[str, float]
    ks: dict[str, float]


def window_statistics(profile: Profile, w: Window) -> tuple[dict[str, float], dict[str, float]]:
    """PSI of every profiled feature and the predictions, KS of the numeric ones."""
    ref = profile.reference
    psi, ks = {}, {}
    values = np.concatenate(w.values) if w.values else np.zeros((0, len(ref.features)))
    for i, f in enumerate(ref.features):
        psi[f.name] = drift.psi(f.counts, w.feature_counts[i, : f.n_bins])
        if f.ks is not None:
            ks[f.name] = drift.ks_statistic(f.ks, values[:, i])
    p = ref.prediction
    psi[drift.PREDICTION] = drift.psi(p.counts, w.prediction_counts[: p.n_bins])
    if p.ks is not None:
        ks[drift.PREDICTION] = drift.ks_statistic(p.ks, np.concatenate(w.predictions))
    return psi, ks


class MonitorMetrics:
    """The monitor's Prometheus series (registered next to :class:`serving.metrics.Metrics`)."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        from serving.metrics import PREFIX

        reg = {"registry": registry}
        labels = ["model", "version", "feature"]
        self.psi = Gauge(PREFIX + "drift_psi", "PSI of the last closed window against the training "
                         "reference, per profiled feature and 'prediction' (worst live worker).",
                         labels, multiprocess_mode="livemax", **reg)  # fmt: skip
        self.ks = Gauge(PREFIX + "drift_ks", "Kolmogorov-Smirnov distance of the last closed window "
                        "against the training reference, numeric features (worst live worker).",
                        labels, multiprocess_mode="livemax", **reg)  # fmt: skip
        self.bins = Counter(PREFIX + "drift_bin", "Rows per reference bin, per profiled feature and "
                            "'prediction' (sum over workers and replicas for fleet-wide PSI).",
                            [*labels, "bin"], **reg)  # fmt: skip
        # The same in every worker: "max" keeps one value per series, dead workers' included.
        self.reference_share = Gauge(PREFIX + "drift_reference_share", "Share of the training rows in "
                                     "each reference bin.", [*labels, "bin"], multiprocess_mode="max",
                                     **reg)  # fmt: skip
        self.rows = Counter(
            PREFIX + "drift_rows", "Rows the drift monitor has seen.", ["model", "version"], **reg
        )
        self.windows = Counter(PREFIX + "drift_windows", "Drift windows closed.", ["model", "version"], **reg)


ProfileLookup = Callable[[str, str], Profile | None]


class DriftMonitor:
    """The observer; see the module docstring. Thread-safe (observer thread + flush ticker)."""

    def __init__(
        self,
        lookup: ProfileLookup,
        metrics: MonitorMetrics | None = None,
        *,
        window_requests: int = 1000,
        window_seconds: float = 300.0,
        min_rows: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.lookup = lookup
        self.metrics = metrics
        self.window_requests = window_requests
        self.window_seconds = window_seconds
        self.min_rows = min_rows
        self.clock = clock
        self.windows: dict[tuple[str, str], Window] = {}
        self.last: dict[tuple[str, str], WindowResult] = {}
        #: The most recent closed windows, oldest first (bounded).
        self.history: collections.deque[WindowResult] = collections.deque(maxlen=1000)
        self._profiles: dict[tuple[str, str], Profile | None] = {}
        self._pending: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, int]] = {}
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None

    # --------------------------------------------------------------- observing

    def profile(self, model: str, version: str) -> Profile | None:
        key = (model, version)
        if key not in self._profiles:
            prof = self.lookup(model, version)
            self._profiles[key] = prof
            if prof is None:
                log.info("no drift reference for %s %s: not monitored", model, version,
                         extra={"event": "drift_no_reference", "model": model, "version": version})  # fmt: skip
            elif self.metrics is not None:
                self._declare(model, version, prof)
        return self._profiles[key]

    #: Rows gathered before they are binned together.
    bin_batch = 256
    #: Rows of a window kept for its KS statistic (bounds memory: requests may carry many rows).
    ks_rows = 20_000

    def __call__(self, obs: Any) -> None:
        """Add one answered prediction to its model version's window."""
        prof = self.profile(obs.model, obs.version)
        if prof is None:
            return
        key = (obs.model, obs.version)
        with self._lock:
            w = self.windows.get(key)
            if w is None:
                ref = prof.reference
                w = self.windows[key] = Window(self.clock(), 0, 0, np.zeros((len(ref.features), _MAX_DECILE_BINS),
                                               np.int64), np.zeros(ref.prediction.n_bins, np.int64))  # fmt: skip
            w.requests += 1
            w.raw.append((obs.rows, obs.outputs))
            w.raw_rows += len(obs.rows)
            if w.raw_rows >= self.bin_batch:
                self._absorb(key, w, prof)
            if w.requests >= self.window_requests or self._old_enough(w):
                self._close(key, prof)

    def _absorb(self, key: tuple[str, str], w: Window, prof: Profile) -> None:
        """Bin the window's gathered rows (finite outputs only) into its counts and the pending counters."""
        if not w.raw:
            return
        rows = np.concatenate([np.asarray(r, dtype=np.float64) for r, _ in w.raw])
        outputs = np.concatenate([np.asarray(o, dtype=np.float64) for _, o in w.raw])
        w.raw, w.raw_rows = [], 0
        ok = np.isfinite(outputs).all(axis=1)
        if not ok.all():
            rows, outputs = rows[ok], outputs[ok]
        if not len(rows):
            return
        values = drift.profile_rows(prof.card, rows, prof.features)
        preds = drift.prediction_values(prof.reference.task, outputs, prof.prep)
        fbins = prof.feature_bins(values)
        pbins = prof.reference.prediction.bins(preds)
        w.rows += len(rows)
        w.feature_counts += fbins
        w.prediction_counts += pbins
        kept = sum(len(v) for v in w.values)
        if kept < self.ks_rows:  # bins count every row; KS uses the window's first ks_rows rows
            w.values.append(values[: self.ks_rows - kept])
            w.predictions.append(preds[: self.ks_rows - kept])
        f0, p0, n0 = self._pending.get(key, (0, 0, 0))
        self._pending[key] = (fbins + f0, pbins + p0, n0 + len(rows))

    def _old_enough(self, w: Window) -> bool:
        return self.clock() - w.started >= self.window_seconds and w.rows + w.raw_rows >= self.min_rows

    def _close(self, key: tuple[str, str], prof: Profile) -> None:
        w = self.windows.pop(key)
        self._absorb(key, w, prof)
        if not w.rows:
            return
        psi, ks = window_statistics(prof, w)
        res = WindowResult(key[0], key[1], w.requests, w.rows, self.clock() - w.started, psi, ks)
        self.last[key] = res
        self.history.append(res)
        self._flush_key(key)
        if self.metrics is not None:
            m = self.metrics
            m.windows.labels(*key).inc()
            for name, v in psi.items():
                if np.isfinite(v):
                    m.psi.labels(*key, name).set(v)
            for name, v in ks.items():
                if np.isfinite(v):
                    m.ks.labels(*key, name).set(v)

    # ---------------------------------------------------------------- flushing

    def tick(self) -> None:
        """Close windows past their time (with enough rows) and flush the bin counters."""
        with self._lock:
            for key, w in list(self.windows.items()):
                if self._old_enough(w):
                    self._close(key, self._profiles[key])
                else:
                    self._absorb(key, w, self._profiles[key])
            for key in list(self._pending):
                self._flush_key(key)

    def _flush_key(self, key: tuple[str, str]) -> None:
        pending = self._pending.pop(key, None)
        if pending is None or self.metrics is None:
            return
        fbins, pbins, n = pending
        prof = self._profiles[key]
        m = self.metrics
        m.rows.labels(*key).inc(n)
        # Counter increments are a file write each under Gunicorn: batch them, nonzero bins only.
        for f, counts in zip(prof.reference.features, fbins, strict=True):
            for b in np.flatnonzero(counts[: f.n_bins]):
                m.bins.labels(*key, f.name, str(b)).inc(int(counts[b]))
        for b in np.flatnonzero(pbins):
            m.bins.labels(*key, drift.PREDICTION, str(b)).inc(int(pbins[b]))

    def _declare(self, model: str, version: str, prof: Profile) -> None:
        """Publish the reference shares (and zero bins, so rates exist before the first row)."""
        m = self.metrics
        for f in (*prof.reference.features, prof.reference.prediction):
            total = float(f.counts.sum()) or 1.0
            for b, c in enumerate(f.counts):
                m.reference_share.labels(model, version, f.name, str(b)).set(c / total)
                m.bins.labels(model, version, f.name, str(b))
        m.rows.labels(model, version)
        m.windows.labels(model, version)

    def start(self, interval: float) -> None:
        """Run :meth:`tick` every ``interval`` seconds on a daemon thread (a greenlet under gevent)."""
        if self._ticker is not None:
            return

        def loop() -> None:
            while True:
                time.sleep(interval)
                try:
                    self.tick()
                except Exception:  # the monitor's failure must never reach the service
                    log.exception("drift monitor tick failed", extra={"event": "drift_tick_failed"})

        self._ticker = threading.Thread(target=loop, name="dlqr-drift-ticker", daemon=True)
        self._ticker.start()


# ------------------------------------------------------------------- wiring


def load_profile(loaded: Any) -> Profile | None:
    """The profile of a loaded model version from its bundle's ``reference.json``, or None.

    The file is covered by the bundle's manifest, which the loader verified.
    """
    from dlqr import bundle as B

    path = Path(loaded.bundle.root) / drift.REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        ref = drift.parse_reference(B.read_json(path))
    except (B.BundleError, drift.ReferenceError) as exc:
        log.warning("unusable drift reference %s: %s", path, exc, extra={"event": "drift_bad_reference"})
        return None
    return Profile(loaded.card, loaded.prep, ref, tuple(loaded.features))


def registry_lookup(registry: Any) -> ProfileLookup:
    """Look a served model version up in the registry and read its reference."""

    def lookup(model: str, version: str) -> Profile | None:
        state = registry.states.get(model)
        vs = state.versions.get(version) if state is not None else None
        return load_profile(vs.model) if vs is not None and vs.model is not None else None

    return lookup


def init_app(app: Any, settings: Any, metrics: Any, registry: Any, plane: Any) -> DriftMonitor | None:
    """Register the drift monitor as a data-plane observer (unless ``DLQR_MONITOR_ENABLED=false``)."""
    if not settings.monitor_enabled:
        return None
    mon = DriftMonitor(
        registry_lookup(registry),
        MonitorMetrics(metrics.registry),
        window_requests=settings.monitor_window_requests,
        window_seconds=settings.monitor_window_seconds,
        min_rows=settings.monitor_min_rows,
    )
    plane.add_observer(mon)
    mon.start(min(settings.monitor_window_seconds, 5.0))
    app.extensions["dlqr_monitor"] = mon
    return mon
