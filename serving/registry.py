"""Which model versions a process serves: states, the version policy, the repository watcher.

For each registered card, in each Gunicorn worker before it accepts a
connection (never in the master), :class:`Registry` scans the model's
directory (:mod:`dlqr.repository`), loads the versions the policy asks for
through :func:`serving.loading.load_model`, warms them up and publishes a
:class:`ModelState` per model. One broken bundle does not stop the others.

Hot swap: each worker runs one :class:`Watcher` (:func:`start_watcher`).
Every ``DLQR_POLL_SECONDS`` it lists the model directories (a ``scandir`` and a
few ``stat`` calls; sha256 work only for a directory it has not seen), and
:meth:`Registry.poll` verifies, loads, self-tests and warms up a new version
before publishing it with one assignment. Signals (Gunicorn owns most of them):

- ``kill -HUP <master>``: Gunicorn's own reload. It starts fresh workers, which
  load the repository's current versions before they accept a connection, then
  stops the old workers gracefully: the new version is served at once, with no
  failed request.
- ``kill -HUP <worker>``: that worker rescans now instead of at its next poll
  (Gunicorn resets a worker's HUP to "terminate"; :func:`start_watcher` replaces
  that, so a stray HUP does not kill a worker).
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlqr import card as cards
from dlqr import repository
from dlqr.bundle import MANIFEST, Bundle, BundleError, verify_bundle
from serving import routing_state as routing_hook
from serving.loading import LoadedModel, LoadError, load_model, random_rows

log = logging.getLogger(__name__)


@dataclass
class VersionState:
    """One version directory of a model: ``loading``, ``ready`` (served), ``failed`` (refused, with
    the reason and the file) or ``available`` (on disk, not loaded under the version policy)."""

    version: str
    path: str
    status: str
    reason: str | None = None
    file: str | None = None
    model: LoadedModel | None = None
    fingerprint: tuple = ()

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def describe(self) -> dict[str, Any]:
        """Public view (/models, V2 metadata): no server paths beyond the offending file's name."""
        out: dict[str, Any] = {"version": self.version, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
            out["file"] = Path(self.file).name if self.file else None
        if self.model is not None:
            out["onnx_sha256"] = self.model.bundle.onnx_sha256
        return out


@dataclass
class ModelState:
    """Readiness of one model as reported by /readyz, /models and ``dlqr_model_ready``.

    Replaced as a whole (never mutated) when anything changes, so a request that read
    ``registry.states[name]`` keeps a consistent view, and the model it uses, to the end.
    ``model`` is the default version (requests that name none); ``versions`` every version
    on disk, greatest first.
    """

    name: str
    status: str = "pending"  # pending -> loading -> ready | failed
    reason: str | None = None
    path: str | None = None
    model: LoadedModel | None = None
    bundle: Bundle | None = None
    versions: dict[str, VersionState] = field(default_factory=dict)
    policy: str = repository.LATEST
    #: Under the routing policy: the routing applied now (None: no routing file, served as latest).
    routing: Any = None
    #: Why the routing file on disk is not applied (the last good routing stays), or None.
    routing_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def served(self) -> list[VersionState]:
        return [v for v in self.versions.values() if v.ready]


#: Batch sizes run once through a freshly loaded session before it takes traffic.
WARMUP_BATCHES = (1, 64)


class Registry:
    """Per-process model states over a versioned repository (:mod:`dlqr.repository`).

    :meth:`load_all` loads what the version policy asks for; :meth:`poll` (the
    :class:`Watcher` thread, or a signal) picks up version directories that
    appeared, changed or disappeared since: each new one is verified, loaded,
    self-tested and warmed up off the request path, then published with one
    assignment. Requests in flight keep the :class:`LoadedModel` they started
    with; a version nobody references any more is freed by reference counting.
    """

    def __init__(
        self,
        artifacts_dir: Path,
        validators: dict[str, Callable[[Any], Any]],
        names: Iterable[str] | None = None,
        on_change: Callable[[ModelState], None] | None = None,
        *,
        intra_op_threads: int = 1,
        keras_check: bool = False,
        policy: repository.Policy | None = None,
        on_refused: Callable[[str, str], None] | None = None,
    ):
        self.artifacts_dir = Path(artifacts_dir)
        self.validators = validators
        self.names = tuple(names if names is not None else cards.names())
        self.cards = {n: cards.get(n) for n in self.names}
        self.policy = policy or repository.Policy()
        self.states: dict[str, ModelState] = {
            n: ModelState(n, policy=self.policy.describe(n)) for n in self.names
        }
        self.on_change = on_change
        self.on_refused = on_refused
        self.intra_op_threads = intra_op_threads
        self.keras_check = keras_check
        self.started_at = time.time()
        self.ready_at: float | None = None
        self._lock = threading.Lock()
        #: Per model, under the routing policy: (file key seen, routing applied, why the file is not).
        self._routing: dict[str, tuple[tuple, Any, str | None]] = {}

    @property
    def all_ready(self) -> bool:
        return all(s.ready for s in self.states.values())

    def _set(self, state: ModelState) -> None:
        self.states[state.name] = state  # one assignment: readers never see a half-built state
        if self.on_change is not None:
            self.on_change(state)

    # ------------------------------------------------------------------ loading

    def _load_version(self, name: str, cand: repository.Candidate) -> VersionState:
        """Verify, load, self-test and warm up one version directory; never raises."""
        card = self.cards[name]
        base = {"version": cand.version, "path": str(cand.path), "fingerprint": cand.fingerprint}
        try:
            if not cand.flat and not (cand.path / MANIFEST).is_file():
                raise BundleError(f"missing file {MANIFEST} (not a bundle, or still being written)",
                                  cand.path / MANIFEST)  # fmt: skip
            model = load_model(
                card,
                cand.path,
                self.validators[name],
                intra_op_threads=self.intra_op_threads,
                keras_check=self.keras_check,
            )
            if not cand.flat and model.version != cand.version:
                raise LoadError(
                    f"{name}: directory {cand.version!r} holds a bundle whose manifest says version "
                    f"{model.version!r}; a version directory must be named after its manifest's version",
                    cand.path / MANIFEST,
                )
            for n in WARMUP_BATCHES:  # first-call allocations happen here, not on a request
                model.forward(model.model_input(random_rows(card, model.prep, n, seed=n)))
        except (BundleError, LoadError) as exc:
            self._refused(name, cand.version, str(exc), exc.path)
            return VersionState(status="failed", reason=str(exc), file=exc.path, **base)
        except Exception as exc:  # never let one model's surprise kill the worker
            reason = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("model %s version %s failed to load", name, cand.version,
                          extra={"event": "model_refused", "model": name, "version": cand.version})  # fmt: skip
            if self.on_refused is not None:
                self.on_refused(name, cand.version)
            return VersionState(status="failed", reason=reason, **base)
        log.info(
            "model %s ready (version %s, %.3fs)",
            name,
            model.version,
            model.load_seconds,
            extra={
                "event": "model_ready",
                "model": name,
                "version": model.version,
                "path": str(cand.path),
                "sha256": model.bundle.onnx_sha256,
                "load_seconds": round(model.load_seconds, 3),
                **model.selftest,
            },
        )
        return VersionState(status="ready", model=model, **base)

    def _refused(self, name: str, version: str | None, reason: str, path: str | None) -> None:
        log.error("model %s refused: %s", name, reason,
                  extra={"event": "model_refused", "model": name, "version": version, "file": path})  # fmt: skip
        if self.on_refused is not None:
            self.on_refused(name, version)

    def _missing(self, name: str) -> tuple[str, str | None]:
        """Why a model directory holds no version at all (the precise bundle error when there is one)."""
        model_dir = self.artifacts_dir / name
        try:
            verify_bundle(model_dir, expected_name=name)
        except BundleError as exc:
            return str(exc), exc.path
        return f"{name}: no version directory under {model_dir}", str(model_dir)

    def refresh(self, name: str) -> ModelState:
        """Rescan one model's directory and apply the version policy; publish the new state."""
        with self._lock:
            return self._refresh(name)

    def _refresh(self, name: str) -> ModelState:
        old = self.states[name]
        policy = self.policy.for_model(name)
        cands = repository.scan(self.artifacts_dir / name)
        route, route_error = None, None
        if policy == repository.ROUTING:
            route, route_error = routing_hook.apply(self, name, cands)
            policy = route.stable if route is not None else repository.LATEST
        found: dict[str, VersionState] = {}
        default: VersionState | None = None
        for cand in cands:  # greatest version first
            known = old.versions.get(cand.version)
            unchanged = (
                known is not None and known.fingerprint == cand.fingerprint and known.path == str(cand.path)
            )
            wanted = policy == repository.ALL or policy == cand.version or (
                policy == repository.LATEST and default is None
            ) or (route is not None and cand.version in route.versions())  # fmt: skip
            if not wanted:
                # Not served under the policy: a loaded one is retired (freed once no request holds it);
                # a refused one stays refused until its directory changes.
                keep_failed = unchanged and known.status == "failed"
                found[cand.version] = known if keep_failed else VersionState(
                    cand.version, str(cand.path), "available", fingerprint=cand.fingerprint)  # fmt: skip
                continue
            if unchanged and known.status in ("ready", "failed"):
                state = known
            else:
                state = self._load_version(name, cand)
            found[cand.version] = state
            if state.ready and default is None and (route is None or cand.version == route.stable):
                default = state
        if default is not None:
            new = ModelState(name, "ready", None, default.path, default.model, default.model.bundle, found,
                             self.policy.describe(name))  # fmt: skip
        else:
            if not cands:
                reason, path = self._missing(name)
                if old.reason != reason:  # once per change, not at every poll
                    self._refused(name, None, reason, path)
            elif policy not in (repository.LATEST, repository.ALL) and policy not in found:
                reason = f"{name}: pinned version {policy!r} is not in {self.artifacts_dir / name} " \
                         f"(found: {', '.join(found) or 'none'})"  # fmt: skip
                path = str(self.artifacts_dir / name)
                if old.reason != reason:  # once per change, not at every poll
                    log.error("model %s not served: %s", name, reason,
                              extra={"event": "pinned_version_missing", "model": name, "version": policy,
                                     "found": list(found)})  # fmt: skip
            else:
                failed = [v for v in found.values() if v.status == "failed"]
                reason = "; ".join(f"version {v.version}: {v.reason}" for v in failed) if len(failed) > 1 else (
                    failed[0].reason if failed else f"{name}: no servable version")  # fmt: skip
                path = failed[0].file if failed else None
            new = ModelState(name, "failed", reason, path, None, None, found, self.policy.describe(name))
        new.routing, new.routing_error = route, route_error
        self._set(new)
        if old.model is not None and new.model is not old.model:  # logged once the switch is done
            log.info(
                "model %s now serves version %s (was %s)",
                name,
                new.model.version if new.model else None,
                old.model.version,
                extra={"event": "model_switched", "model": name,
                       "version": new.model.version if new.model else None, "previous": old.model.version},
            )  # fmt: skip
        return new

    def load_all(self) -> None:
        """Load every model under the version policy, recording success or the reason for failure."""
        for name in self.names:
            self._set(ModelState(name, status="loading", policy=self.policy.describe(name)))
            self.refresh(name)
        # Move everything loaded so far out of the cyclic collector's sight, so that a full
        # collection never has to walk it on some unlucky request.
        gc.collect()
        gc.freeze()
        if self.all_ready:
            self.ready_at = time.time()
            log.info(
                "all models ready in %.2fs",
                self.ready_at - self.started_at,
                extra={"event": "ready", "seconds": round(self.ready_at - self.started_at, 3)},
            )

    def changed(self, name: str) -> bool:
        """Whether the version directories on disk differ from what this process last saw (cheap)."""
        seen = {v: (s.path, s.fingerprint) for v, s in self.states[name].versions.items()}
        now = {c.version: (str(c.path), c.fingerprint) for c in repository.scan(self.artifacts_dir / name)}
        return seen != now or routing_hook.file_changed(self, name)

    def poll(self) -> list[str]:
        """Refresh the models whose directories changed; return their names."""
        changed = [n for n in self.names if self.changed(n)]
        for name in changed:
            self.refresh(name)
        if changed:
            gc.collect()  # the retired sessions are freed by reference counting; this sweeps cycles
            gc.freeze()
        return changed


class Watcher(threading.Thread):
    """Daemon thread of one worker: :meth:`Registry.poll` every ``interval`` seconds, or at once
    after :meth:`wake` (the worker's SIGHUP handler calls it)."""

    def __init__(self, registry: Registry, interval: float):
        super().__init__(name="dlqr-repository-watcher", daemon=True)
        self.registry = registry
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.registry.poll()
            except Exception:  # keep watching: the next poll may succeed
                log.exception("repository poll failed", extra={"event": "poll_failed"})


def start_watcher(registry: Registry, poll_seconds: float) -> Watcher:
    """Start the watcher (``poll_seconds`` 0: only on SIGHUP) and route this process's SIGHUP to it."""
    watcher = Watcher(registry, poll_seconds or None)
    watcher.start()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda signum, frame: watcher.wake())
    return watcher
