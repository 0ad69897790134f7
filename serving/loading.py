"""Loading one model version: verify, open in ONNX Runtime, check, self-test.

For one version directory of a registered card (:func:`load_model`):

1. verify the bundle: every file's sha256 against its manifest
   (:func:`dlqr.bundle.load_bundle`); a refused bundle names the file that failed;
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

The result is a :class:`LoadedModel`; which versions are loaded, and when, is
:mod:`serving.registry`'s job. Neither TensorFlow nor Keras is imported unless
the cross-check is asked for.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlqr import processing
from dlqr.bundle import ONNX_FILE, Bundle, load_bundle
from dlqr.card import ModelCard
from dlqr.tasks import ATOL, RTOL

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

    def model_input(self, raw: np.ndarray) -> np.ndarray:
        """(n, d) API-unit rows -> the scaled float32 array the network takes."""
        return processing.model_input(raw, self.prep)


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


def onnx_bytes(bundle: Bundle) -> bytes:
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
    data = onnx_bytes(bundle)
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
