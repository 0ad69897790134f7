"""Load, verify and self-test the model bundles; track readiness per model.

For each model, in each Gunicorn worker after fork (never in the master):

1. verify the bundle: every file's sha256 against its manifest
   (:func:`serving.bundle.load_bundle`); a refused bundle is logged with the
   file that failed;
2. check ``preprocessing.json`` against :mod:`serving.spec`;
3. load ``model.h5`` with Keras (``compile=False, safe_mode=True``);
4. extract the NumPy fast path (:mod:`serving.fastpath`); unsupported layers
   make the model not ready;
5. self-test: every golden pair in the manifest goes through the full serving
   chain (API validation -> scaling -> network -> post-processing) on both
   Keras and the fast path and must reproduce the stored raw output and
   prediction; the two paths must also agree on random in-range inputs.

Only then is the model ready. Loading runs in a background thread by default so
``/healthz`` answers at once while ``/readyz`` reports ``loading``.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving import processing
from serving.bundle import Bundle, BundleError, load_bundle
from serving.spec import INPUT_DIMS, MODEL_NAMES, OUTPUT_DIMS, TASKS, WINE

log = logging.getLogger(__name__)

#: Tolerance between the stored golden outputs / Keras and the fast path (absolute + relative).
ATOL = 1e-5
RTOL = 1e-5
#: Random in-range rows compared between Keras and the fast path at load.
CROSSCHECK_ROWS = 64


class LoadError(Exception):
    """A model cannot be served; ``path`` names the offending file when known."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = str(path) if path is not None else None


def make_postprocess(name: str, prep: dict[str, Any]) -> Callable[[np.ndarray], list[dict[str, Any]]]:
    """A per-model specialisation of :func:`serving.processing.postprocess`, for the hot path.

    Same arithmetic in the same order on Python floats (no per-call NumPy overhead for
    a handful of values); the self-test asserts equality with the shared function.
    """
    task = TASKS[name]
    if task == "regression":
        key = prep["target"]
        mean, scale = float(prep["target_scaler"]["mean"]), float(prep["target_scaler"]["scale"])
        return lambda out: [{key: v * scale + mean} for v in out[:, 0].tolist()]
    if task == "binary":
        t = float(prep["threshold"]["value"])
        return lambda out: [{"probability": p, "seizure": p >= t, "threshold": t} for p in out[:, 0].tolist()]

    def multiclass(out: np.ndarray) -> list[dict[str, Any]]:
        preds = []
        for row in out.tolist():
            k = row.index(max(row))  # first maximum, like np.argmax (inputs are finite)
            preds.append({"digit": k, "confidence": row[k], "probabilities": row})
        return preds

    return multiclass


@dataclass
class LoadedModel:
    """A verified, self-tested model and everything the hot path needs."""

    name: str
    bundle: Bundle
    forward: Callable[[np.ndarray], np.ndarray]
    prep: dict[str, Any]  # preprocessing.json with list-valued scalers turned into arrays
    features: tuple[str, ...]
    range_min: np.ndarray | None
    range_max: np.ndarray | None
    postprocess: Callable[[np.ndarray], list[dict[str, Any]]] | None = None
    keras_model: Any = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    selftest: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0

    @property
    def version(self) -> str:
        return self.bundle.version

    def predict(self, raw: np.ndarray) -> tuple[np.ndarray, float]:
        """(n, d) API-unit rows -> raw network outputs (float64) and inference seconds."""
        x = processing.model_input(self.name, raw, self.prep)
        t0 = time.perf_counter()
        out = self.forward(x)
        return np.asarray(out, dtype=np.float64), time.perf_counter() - t0


@dataclass
class ModelState:
    """Readiness of one model as reported by /readyz, /models and ``model_ready``."""

    name: str
    status: str = "pending"  # pending -> loading -> ready | failed
    reason: str | None = None
    path: str | None = None
    model: LoadedModel | None = None
    bundle: Bundle | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def _compiled_prep(prep: dict[str, Any]) -> dict[str, Any]:
    """Scaler lists as float64 arrays once, so per-request processing converts nothing."""
    out = dict(prep)
    scaler = dict(prep["input_scaler"])
    if scaler.get("type") == "standard":
        scaler["mean"] = np.asarray(scaler["mean"], dtype=np.float64)
        scaler["scale"] = np.asarray(scaler["scale"], dtype=np.float64)
    out["input_scaler"] = scaler
    return out


def check_preprocessing(name: str, prep: dict[str, Any], path: Path) -> None:
    """The bundle's preprocessing must describe this model as serving.spec does."""

    def fail(msg: str) -> LoadError:
        return LoadError(f"{name}: preprocessing.json {msg}", path)

    if prep.get("task") != TASKS[name]:
        raise fail(f"task {prep.get('task')!r}, expected {TASKS[name]!r}")
    if prep.get("input_dim") != INPUT_DIMS[name] or len(prep.get("features") or []) != INPUT_DIMS[name]:
        raise fail(f"input_dim/features do not match the spec's {INPUT_DIMS[name]} inputs")
    if name == "wine" and sorted(prep["features"]) != sorted(WINE.features):
        raise fail(f"features {prep['features']} are not the spec's wine features")
    scaler = prep.get("input_scaler") or {}
    if scaler.get("type") == "standard":
        mean, scale = np.asarray(scaler.get("mean"), float), np.asarray(scaler.get("scale"), float)
        if (
            mean.shape != (INPUT_DIMS[name],)
            or scale.shape != mean.shape
            or not np.all(np.isfinite(scale))
            or np.any(scale == 0)
        ):
            raise fail("input_scaler mean/scale have the wrong shape or a zero/non-finite scale")
    elif scaler.get("type") == "divide":
        if not float(scaler.get("divisor", 0)) > 0:
            raise fail("input_scaler divisor must be > 0")
    else:
        raise fail(f"unknown input_scaler type {scaler.get('type')!r}")
    if name == "wine":
        ts = prep.get("target_scaler") or {}
        if not (
            isinstance(ts.get("mean"), int | float)
            and isinstance(ts.get("scale"), int | float)
            and ts["scale"] > 0
        ):
            raise fail("target_scaler needs numeric mean and scale > 0")
    if name == "seizure":
        t = (prep.get("threshold") or {}).get("value")
        if not isinstance(t, int | float) or not 0.0 <= t <= 1.0:
            raise fail(f"threshold.value {t!r} is not a probability")
    ranges = prep.get("feature_ranges")
    if ranges is not None and (
        len(ranges.get("min", [])) != INPUT_DIMS[name] or len(ranges.get("max", [])) != INPUT_DIMS[name]
    ):
        raise fail("feature_ranges min/max must have one entry per feature")


def _close(a: Any, b: Any, atol: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=RTOL, abs_tol=atol)


def compare_prediction(
    name: str, got: dict[str, Any], want: dict[str, Any], prep: dict[str, Any]
) -> str | None:
    """None if the prediction matches the golden one; else a description of the mismatch."""
    if set(got) != set(want):
        return f"keys {sorted(got)} != golden {sorted(want)}"
    if name == "wine":
        key = prep["target"]
        tol = ATOL * float(prep["target_scaler"]["scale"])  # raw-output tolerance in % vol
        return None if _close(got[key], want[key], tol) else f"{key} {got[key]} != golden {want[key]}"
    if name == "seizure":
        if not _close(got["probability"], want["probability"], ATOL):
            return f"probability {got['probability']} != golden {want['probability']}"
        if not _close(got["threshold"], want["threshold"], 0.0):
            return f"threshold {got['threshold']} != golden {want['threshold']}"
        near = abs(float(want["probability"]) - float(want["threshold"])) <= ATOL
        if got["seizure"] != want["seizure"] and not near:
            return f"decision {got['seizure']} != golden {want['seizure']}"
        return None
    probs_ok = len(got["probabilities"]) == len(want["probabilities"]) and all(
        _close(a, b, ATOL) for a, b in zip(got["probabilities"], want["probabilities"], strict=True)
    )
    if not probs_ok or not _close(got["confidence"], want["confidence"], ATOL):
        return f"probabilities {got['probabilities']} != golden {want['probabilities']}"
    top2 = sorted(want["probabilities"])[-2:]
    if got["digit"] != want["digit"] and abs(top2[1] - top2[0]) > ATOL:
        return f"digit {got['digit']} != golden {want['digit']}"
    return None


def _random_rows(name: str, prep: dict[str, Any], n: int, seed: int = 0) -> np.ndarray:
    """Inputs spread over the training range (or 0..255 pixels) for the Keras cross-check."""
    rng = np.random.default_rng(seed)
    if name == "digit":
        return rng.integers(0, 256, size=(n, INPUT_DIMS[name])).astype(np.float64)
    ranges = prep.get("feature_ranges")
    if ranges:
        lo, hi = np.asarray(ranges["min"], float), np.asarray(ranges["max"], float)
    else:
        scaler = prep["input_scaler"]
        lo = np.asarray(scaler["mean"], float) - 3 * np.asarray(scaler["scale"], float)
        hi = np.asarray(scaler["mean"], float) + 3 * np.asarray(scaler["scale"], float)
    return rng.uniform(lo, hi, size=(n, len(lo)))


def selftest(
    name: str,
    bundle: Bundle,
    prep: dict[str, Any],
    forward: Callable[[np.ndarray], np.ndarray],
    keras_model: Any,
    validate_instance: Callable[[Any], Any],
    features: tuple[str, ...],
) -> dict[str, Any]:
    """Run the manifest's golden pairs through the serving chain; raise LoadError on mismatch."""
    from serving.fastpath import keras_forward
    from serving.schemas import instance_rows

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
    raw = instance_rows(name, instances, features)
    x = processing.model_input(name, raw, prep)
    want = np.asarray([pair["raw_output"] for pair in golden], dtype=np.float64)
    fast = np.asarray(forward(x), dtype=np.float64)
    ref = np.asarray(keras_forward(keras_model, x), dtype=np.float64)
    if want.shape != fast.shape:
        raise LoadError(
            f"{name}: golden raw_output shape {want.shape} != model output {fast.shape}", manifest_path
        )
    for label, got in (("Keras", ref), ("fast path", fast)):
        bad = ~np.isclose(got, want, rtol=RTOL, atol=ATOL)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise LoadError(
                f"{name}: golden pair {i} mismatch on {label}: output {got[i].tolist()} != stored {want[i].tolist()} "
                f"(max abs diff {float(np.abs(got - want).max()):.3g})",
                manifest_path,
            )
    preds = make_postprocess(name, prep)(fast)
    if preds != processing.postprocess(name, fast, prep):
        raise LoadError(f"{name}: hot-path post-processing disagrees with serving.processing.postprocess")
    for i, (got_p, pair) in enumerate(zip(preds, golden, strict=True)):
        problem = compare_prediction(name, got_p, pair["prediction"], prep)
        if problem:
            raise LoadError(f"{name}: golden pair {i} prediction mismatch: {problem}", manifest_path)
    rows = processing.model_input(name, _random_rows(name, prep, CROSSCHECK_ROWS), prep)
    diff = float(np.abs(np.asarray(forward(rows), np.float64) - keras_forward(keras_model, rows)).max())
    if not diff <= ATOL:
        raise LoadError(
            f"{name}: fast path differs from Keras by {diff:.3g} on random inputs (tolerance {ATOL})"
        )
    return {
        "golden_pairs": len(golden),
        "golden_max_abs_diff": float(np.abs(fast - want).max()),
        "keras_crosscheck_rows": CROSSCHECK_ROWS,
        "keras_crosscheck_max_abs_diff": diff,
    }


def load_model(name: str, artifacts_dir: Path, validate_instance: Callable[[Any], Any]) -> LoadedModel:
    """Verify, load and self-test one bundle; raise LoadError (or BundleError) if it cannot be served."""
    from serving.fastpath import UnsupportedModelError, from_keras

    t0 = time.perf_counter()
    bundle = load_bundle(artifacts_dir / name, expected_name=name)
    prep = bundle.preprocessing
    if not isinstance(prep, dict):
        raise LoadError(f"{name}: preprocessing.json is not an object", bundle.root / "preprocessing.json")
    check_preprocessing(name, prep, bundle.root / "preprocessing.json")
    try:
        import keras

        keras_model = keras.saving.load_model(str(bundle.model_path), compile=False, safe_mode=True)
    except Exception as exc:  # h5py/Keras raise many types for a corrupt or foreign file
        raise LoadError(
            f"{name}: Keras cannot load model.h5: {type(exc).__name__}: {exc}", bundle.model_path
        ) from None
    try:
        mlp = from_keras(keras_model)
    except UnsupportedModelError as exc:
        raise LoadError(f"{name}: {exc}", bundle.model_path) from None
    if mlp.input_dim != INPUT_DIMS[name] or mlp.output_dim != OUTPUT_DIMS[name]:
        raise LoadError(
            f"{name}: model maps {mlp.input_dim} -> {mlp.output_dim}, the spec needs "
            f"{INPUT_DIMS[name]} -> {OUTPUT_DIMS[name]}",
            bundle.model_path,
        )
    cprep = _compiled_prep(prep)
    features = tuple(prep["features"])
    report = selftest(name, bundle, cprep, mlp, keras_model, validate_instance, features)
    ranges = prep.get("feature_ranges")
    return LoadedModel(
        name=name,
        bundle=bundle,
        forward=mlp,
        postprocess=make_postprocess(name, cprep),
        prep=cprep,
        features=features,
        range_min=np.asarray(ranges["min"], dtype=np.float64) if ranges else None,
        range_max=np.asarray(ranges["max"], dtype=np.float64) if ranges else None,
        keras_model=keras_model,
        layers=mlp.describe(),
        selftest=report,
        load_seconds=time.perf_counter() - t0,
    )


class Registry:
    """Per-process model states; loading is sequential, in the caller's or a background thread."""

    def __init__(
        self,
        artifacts_dir: Path,
        validators: dict[str, Callable[[Any], Any]],
        names: Iterable[str] = MODEL_NAMES,
        on_change: Callable[[ModelState], None] | None = None,
    ):
        self.artifacts_dir = Path(artifacts_dir)
        self.validators = validators
        self.names = tuple(names)
        self.states: dict[str, ModelState] = {n: ModelState(n) for n in self.names}
        self.on_change = on_change
        self.started_at = time.time()
        self.ready_at: float | None = None
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> ModelState | None:
        return self.states.get(name)

    @property
    def all_ready(self) -> bool:
        return all(s.ready for s in self.states.values())

    def _set(self, state: ModelState) -> None:
        self.states[state.name] = state  # one assignment: readers never see a half-built state
        if self.on_change is not None:
            self.on_change(state)

    def load_all(self) -> None:
        """Load every model, recording success or the reason for failure."""
        for name in self.names:
            self._set(ModelState(name, status="loading"))
            try:
                model = load_model(name, self.artifacts_dir, self.validators[name])
            except (BundleError, LoadError) as exc:
                self._set(ModelState(name, status="failed", reason=str(exc), path=exc.path))
                log.error(
                    "model %s refused: %s",
                    name,
                    exc,
                    extra={"event": "model_refused", "model": name, "file": exc.path},
                )
            except Exception as exc:  # never let one model's surprise kill the worker
                self._set(ModelState(name, status="failed", reason=f"unexpected {type(exc).__name__}: {exc}"))
                log.exception(
                    "model %s failed to load", name, extra={"event": "model_refused", "model": name}
                )
            else:
                self._set(ModelState(name, status="ready", model=model, bundle=model.bundle))
                log.info(
                    "model %s ready (version %s, %.2fs)",
                    name,
                    model.version,
                    model.load_seconds,
                    extra={
                        "event": "model_ready",
                        "model": name,
                        "version": model.version,
                        "sha256": model.bundle.model_sha256,
                        "load_seconds": round(model.load_seconds, 3),
                        **model.selftest,
                    },
                )
        # TensorFlow/Keras leave ~400k long-lived objects; a full GC pass over them takes ~0.2 s
        # on a 2-core machine and would land on some unlucky request. Collect once now and move
        # everything loaded so far out of the collector's sight.
        gc.collect()
        gc.freeze()
        if self.all_ready:
            self.ready_at = time.time()
            log.info(
                "all models ready in %.2fs",
                self.ready_at - self.started_at,
                extra={"event": "ready", "seconds": round(self.ready_at - self.started_at, 3)},
            )

    def start_background(self) -> threading.Thread:
        """Load in a daemon thread (started after fork, so each worker loads its own models)."""
        self._thread = threading.Thread(target=self.load_all, name="dlqr-model-loader", daemon=True)
        self._thread.start()
        return self._thread

    def wait(self, timeout: float | None = None) -> bool:
        """Block until background loading finishes; True when every model is ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.all_ready
