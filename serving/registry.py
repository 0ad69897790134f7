"""Load, verify and self-test the model bundles; track readiness per model.

For each registered card, in each Gunicorn worker before it accepts a
connection (never in the master):

1. verify the bundle: every file's sha256 against its manifest
   (:func:`dlqr.bundle.load_bundle`); a refused bundle is logged with the file
   that failed;
2. check ``preprocessing.json`` against the model's card and task;
3. open ``model.onnx`` in an ONNX Runtime ``InferenceSession`` (CPU provider,
   one intra-op thread by default) from the very bytes whose sha256 was checked,
   and check its input/output widths against the card;
4. self-test: every golden pair in the manifest goes through the whole serving
   chain (request validation -> scaling -> ONNX Runtime -> the task's
   post-processing) and must reproduce the stored raw output within 1e-5 and
   the stored prediction;
5. optionally (``DLQR_KERAS_CROSSCHECK=1``, when Keras is importable) load
   ``model.h5`` and compare it with ONNX Runtime on the golden pairs and on 64
   random in-range inputs.

Only then is the model ready. One broken bundle does not stop the others.
Neither TensorFlow nor Keras is imported unless the cross-check is asked for.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlqr import card as cards
from dlqr import processing, repository
from dlqr.bundle import MANIFEST, ONNX_FILE, Bundle, BundleError, load_bundle, verify_bundle
from dlqr.card import ModelCard
from dlqr.tasks import ATOL, RTOL
from serving import routing_state as routing_hook

log = logging.getLogger(__name__)

#: Random in-range rows compared between Keras and ONNX Runtime by the optional cross-check.
CROSSCHECK_ROWS = 64


class LoadError(Exception):
    """A model cannot be served; ``path`` names the offending file when known."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = str(path) if path is not None else None


def ort_session(model_bytes: bytes, intra_op_threads: int = 1):
    """An ONNX Runtime CPU session over the given model bytes."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only: no per-session INFO/WARNING lines in the JSON log
    return ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])


class OnnxForward:
    """``forward(x)``: float32 (n, d) -> float64 (n, k) through one InferenceSession."""

    def __init__(self, session: Any):
        self.session = session
        inp = session.get_inputs()
        out = session.get_outputs()
        if len(inp) != 1 or len(out) != 1:
            raise ValueError(f"expected one input and one output, found {len(inp)} and {len(out)}")
        self.input_name = inp[0].name
        self.output_names = [out[0].name]
        self.input_shape = list(inp[0].shape)
        self.output_shape = list(out[0].shape)
        self._run = session.run

    @property
    def input_dim(self) -> Any:
        return self.input_shape[-1] if self.input_shape else None

    @property
    def output_dim(self) -> Any:
        return self.output_shape[-1] if self.output_shape else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run(self.output_names, {self.input_name: x})[0]

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "onnxruntime",
            "input": {"name": self.input_name, "shape": self.input_shape},
            "output": {"name": self.output_names[0], "shape": self.output_shape},
        }


@dataclass
class LoadedModel:
    """A verified, self-tested model and everything the hot path needs."""

    card: ModelCard
    bundle: Bundle
    forward: Callable[[np.ndarray], np.ndarray]
    prep: dict[str, Any]  # preprocessing.json with list-valued scalers turned into arrays
    features: tuple[str, ...]
    range_min: np.ndarray | None
    range_max: np.ndarray | None
    postprocess: Callable[[np.ndarray], list[dict[str, Any]]]
    runtime: dict[str, Any] = field(default_factory=dict)
    selftest: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.bundle.version

    def predict(self, raw: np.ndarray) -> tuple[np.ndarray, float]:
        """(n, d) API-unit rows -> raw network outputs (float64) and inference seconds."""
        x = processing.model_input(raw, self.prep)
        t0 = time.perf_counter()
        out = self.forward(x)
        return np.asarray(out, dtype=np.float64), time.perf_counter() - t0


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
    """Readiness of one model as reported by /readyz, /models and ``model_ready``.

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


def check_preprocessing(card: ModelCard, prep: dict[str, Any], path: Path) -> None:
    """The bundle's preprocessing must describe the model its card declares."""
    problem = card.check_preprocessing(prep) or processing.check_input_scaler(prep, card.input_dim)
    if problem:
        raise LoadError(f"{card.name}: preprocessing.json {problem}", path)


def random_rows(card: ModelCard, prep: dict[str, Any], n: int, seed: int = 0) -> np.ndarray:
    """Inputs spread over the training range (or the card's range) for cross-checks."""
    rng = np.random.default_rng(seed)
    ranges = prep.get("feature_ranges")
    if ranges:
        lo, hi = np.asarray(ranges["min"], float), np.asarray(ranges["max"], float)
    elif card.input_range is not None:
        lo = np.full(card.input_dim, card.input_range[0])
        hi = np.full(card.input_dim, card.input_range[1])
    else:
        scaler = prep["input_scaler"]
        lo = np.asarray(scaler["mean"], float) - 3 * np.asarray(scaler["scale"], float)
        hi = np.asarray(scaler["mean"], float) + 3 * np.asarray(scaler["scale"], float)
    rows = rng.uniform(lo, hi, size=(n, len(lo)))
    return np.round(rows) if card.input_datatype.startswith(("UINT", "INT")) else rows


def selftest(
    card: ModelCard,
    bundle: Bundle,
    prep: dict[str, Any],
    forward: Callable[[np.ndarray], np.ndarray],
    validate_instance: Callable[[Any], Any],
    features: tuple[str, ...],
) -> dict[str, Any]:
    """Run the manifest's golden pairs through the serving chain; raise LoadError on mismatch."""
    name = card.name
    golden = bundle.manifest.get("golden") or []
    manifest_path = bundle.root / "manifest.json"
    if not golden:
        raise LoadError(
            f"{name}: manifest has no golden pairs; refusing to serve an unchecked model", manifest_path
        )
    instances = []
    for i, pair in enumerate(golden):
        try:
            instances.append(validate_instance(pair["input"]))
        except Exception as exc:  # pydantic ValidationError or a malformed pair
            raise LoadError(
                f"{name}: golden input {i} is not a valid API instance: {exc}", manifest_path
            ) from None
    x = processing.model_input(card.rows(instances, features), prep)
    try:
        want = np.asarray([pair["raw_output"] for pair in golden], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise LoadError(f"{name}: golden pairs lack a numeric raw_output", manifest_path) from None
    got = np.asarray(forward(x), dtype=np.float64)
    if want.shape != got.shape:
        raise LoadError(
            f"{name}: golden raw_output shape {want.shape} != model output {got.shape}", manifest_path
        )
    bad = ~np.isclose(got, want, rtol=RTOL, atol=ATOL)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise LoadError(
            f"{name}: golden pair {i} mismatch on ONNX Runtime: output {got[i].tolist()} != stored "
            f"{want[i].tolist()} (max abs diff {float(np.abs(got - want).max()):.3g})",
            bundle.onnx_path,
        )
    preds = card.task.postprocessor(prep)(got)
    for i, (got_p, pair) in enumerate(zip(preds, golden, strict=True)):
        problem = card.task.compare(got_p, pair.get("prediction") or {}, prep)
        if problem:
            raise LoadError(f"{name}: golden pair {i} prediction mismatch: {problem}", manifest_path)
    return {"golden_pairs": len(golden), "golden_max_abs_diff": float(np.abs(got - want).max())}


def keras_crosscheck(
    card: ModelCard, bundle: Bundle, prep: dict[str, Any], forward: Callable[[np.ndarray], np.ndarray]
) -> dict[str, Any]:
    """Compare ONNX Runtime with Keras on the golden inputs and random rows (needs Keras)."""
    try:
        import keras
    except ImportError:
        return {"keras_crosscheck": "skipped: keras is not installed"}
    try:
        km = keras.saving.load_model(str(bundle.model_path), compile=False, safe_mode=True)
    except Exception as exc:  # h5py/Keras raise many types for a corrupt or foreign file
        raise LoadError(
            f"{card.name}: Keras cannot load model.h5: {type(exc).__name__}: {exc}", bundle.model_path
        ) from None
    rows = processing.model_input(random_rows(card, prep, CROSSCHECK_ROWS), prep)
    ref = np.asarray(km.predict(rows, batch_size=len(rows), verbose=0), dtype=np.float64)
    diff = float(np.abs(np.asarray(forward(rows), np.float64) - ref).max())
    if not diff <= ATOL:
        raise LoadError(
            f"{card.name}: ONNX Runtime differs from Keras model.h5 by {diff:.3g} on random inputs "
            f"(tolerance {ATOL})",
            bundle.onnx_path,
        )
    return {"keras_crosscheck_rows": CROSSCHECK_ROWS, "keras_crosscheck_max_abs_diff": diff}


def _onnx_bytes(bundle: Bundle) -> bytes:
    """model.onnx's bytes, re-checked against the manifest (the session loads these very bytes)."""
    if not bundle.has_onnx:
        raise LoadError(
            f"{bundle.name}: bundle has no {ONNX_FILE} (serving runs ONNX Runtime); add it on a machine "
            f"with TensorFlow: python -m training add-onnx {bundle.root}",
            bundle.onnx_path,
        )
    data = bundle.onnx_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != bundle.manifest["files"][ONNX_FILE]:
        raise LoadError(f"{bundle.name}: sha256 mismatch for {ONNX_FILE} (changed after verification)",
                        bundle.onnx_path)  # fmt: skip
    return data


def load_model(
    card: ModelCard,
    bundle_dir: Path,
    validate_instance: Callable[[Any], Any],
    *,
    intra_op_threads: int = 1,
    keras_check: bool = False,
) -> LoadedModel:
    """Verify, load and self-test one bundle; raise LoadError (or BundleError) if it cannot be served."""
    name = card.name
    t0 = time.perf_counter()
    bundle = load_bundle(bundle_dir, expected_name=name)
    prep = bundle.preprocessing
    prep_path = bundle.root / "preprocessing.json"
    if not isinstance(prep, dict):
        raise LoadError(f"{name}: preprocessing.json is not an object", prep_path)
    check_preprocessing(card, prep, prep_path)
    data = _onnx_bytes(bundle)
    try:
        forward = OnnxForward(ort_session(data, intra_op_threads))
    except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
        raise LoadError(
            f"{name}: ONNX Runtime cannot load {ONNX_FILE}: {type(exc).__name__}: {exc}", bundle.onnx_path
        ) from None
    if forward.input_dim != card.input_dim or forward.output_dim != card.output_dim:
        raise LoadError(
            f"{name}: model.onnx maps {forward.input_shape} -> {forward.output_shape}, the card needs "
            f"{card.input_dim} -> {card.output_dim}",
            bundle.onnx_path,
        )
    cprep = processing.compiled(prep)
    features = tuple(prep["features"])
    report = selftest(card, bundle, cprep, forward, validate_instance, features)
    if keras_check:
        report.update(keras_crosscheck(card, bundle, cprep, forward))
    ranges = prep.get("feature_ranges")
    return LoadedModel(
        card=card,
        bundle=bundle,
        forward=forward,
        postprocess=card.task.postprocessor(cprep),
        prep=cprep,
        features=features,
        range_min=np.asarray(ranges["min"], dtype=np.float64) if ranges else None,
        range_max=np.asarray(ranges["max"], dtype=np.float64) if ranges else None,
        runtime=forward.describe(),
        selftest=report,
        load_seconds=time.perf_counter() - t0,
    )


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
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Per model, under the routing policy: (file key seen, routing applied, why the file is not).
        self._routing: dict[str, tuple[tuple, Any, str | None]] = {}

    def get(self, name: str) -> ModelState | None:
        return self.states.get(name)

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
                model.predict(random_rows(card, model.prep, n, seed=n))
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

    def start_background(self) -> threading.Thread:
        """Load in a daemon thread (for embedding; Gunicorn workers load before they accept)."""
        self._thread = threading.Thread(target=self.load_all, name="dlqr-model-loader", daemon=True)
        self._thread.start()
        return self._thread

    def wait(self, timeout: float | None = None) -> bool:
        """Block until background loading finishes; True when every model is ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.all_ready


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
