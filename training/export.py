"""Export: assemble and atomically seal an artifact bundle (see :mod:`dlqr.bundle`).

The bundle holds the trained Keras model twice: ``model.h5`` (the Keras
artifact) and ``model.onnx`` (Keras' own ONNX export, what serving runs in ONNX
Runtime). The export fails, and writes nothing, unless ONNX Runtime reproduces
Keras within 1e-5 on the golden pairs and on every row it is given (the whole
test split). Where ONNX export is impossible (no TensorFlow, e.g. training on
the JAX backend), training refuses to start (:func:`require_onnx_export`) unless
``--skip-onnx`` asks for a bundle without ``model.onnx``; a warning then says how
to add it later: :func:`add_onnx` (``python -m training add-onnx``).

Nothing here pickles: the models are ``.h5`` (no optimizer state) and ONNX,
everything else is JSON, CSV, PNG or the Markdown model card.
"""

from __future__ import annotations

import datetime as dt
import platform
import shutil
import subprocess
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from dlqr import bundle as B
from dlqr import drift, processing
from dlqr.card import get as get_card


def git_commit(repo: Path | None = None) -> str:
    """HEAD commit of the working tree, '+dirty' if it has uncommitted changes, or 'unknown'."""
    cwd = str(repo or Path(__file__).resolve().parents[1])
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "training", "serving", "dlqr"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers, plus the Keras backend."""
    import keras

    out = {"python": platform.python_version(), "keras_backend": keras.backend.backend()}
    for dist in (
        "keras",
        "tf2onnx",
        "onnx",
        "onnxruntime",
        "tensorflow",
        "tensorflow-cpu",
        "jax",
        "jaxlib",
        "torch",
        "numpy",
        "h5py",
        "scikit-learn",
        "pandas",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def new_version(now: dt.datetime | None = None) -> str:
    """Sortable version string from the UTC creation time, e.g. '2026.11.27.013000'."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y.%m.%d.%H%M%S")


def golden_pairs(name: str, model, raw_rows: np.ndarray, prep: dict) -> list[dict[str, Any]]:
    """Input -> (raw output, prediction) pairs computed through the shared processing and the card."""
    card = get_card(name)
    x = processing.model_input(raw_rows, prep)
    out = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    preds = card.task.postprocessor(prep)(out)
    return [
        {"input": card.instance_from_row(row, prep["features"]), "raw_output": o.tolist(), "prediction": pr}
        for row, o, pr in zip(raw_rows, out, preds, strict=True)
    ]


class OnnxExportError(RuntimeError):
    """ONNX export is impossible here, or its result does not reproduce Keras."""


#: ONNX Runtime must reproduce Keras within this (absolute and relative) on every checked row.
ONNX_TOLERANCE = 1e-5


def onnx_unavailable() -> str | None:
    """Why Keras cannot export ONNX in this environment, or None if it can."""
    import importlib.util

    import keras

    backend = keras.backend.backend()
    if importlib.util.find_spec("tensorflow") is None:
        return f"TensorFlow is not installed (Keras' ONNX export needs it; backend is {backend!r})"
    if backend not in ("tensorflow", "jax"):
        return f"Keras' ONNX export is not wired up for the {backend!r} backend here"
    for mod in ("tf2onnx", "onnxruntime"):
        if importlib.util.find_spec(mod) is None:
            return f"the {mod!r} package is not installed (pip install '.[train]')"
    return None


def require_onnx_export(skip_onnx: bool = False) -> None:
    """Raise :class:`OnnxExportError` now if a bundle trained here could not get ``model.onnx``.

    Called before any data is loaded, so a run that could only write an unservable
    bundle stops in its first seconds instead of after the training. ``skip_onnx``
    (``--skip-onnx``) accepts such bundles.
    """
    if skip_onnx:
        return
    reason = onnx_unavailable()
    if reason:
        raise OnnxExportError(
            f"cannot export model.onnx here: {reason}. Serving needs it, so nothing was trained. "
            "Install the training extras with TensorFlow (make install), or pass --skip-onnx to "
            "write bundles without model.onnx and add it later on a machine with TensorFlow: "
            "python -m training add-onnx artifacts/<model>/<version>"
        )


def export_onnx(model, path: Path, check_x: np.ndarray, graph=None) -> dict[str, Any]:
    """Write ``model`` as ONNX to ``path`` and prove ONNX Runtime reproduces it on ``check_x``.

    ``graph`` (default ``model``) is the Keras model actually exported: the same function in
    another layout (a folded ensemble's members side by side, :func:`training.ensemble.unfold`).
    ONNX Runtime is always checked against ``model``, the one written to ``model.h5``.
    Raises :class:`OnnxExportError` (and removes ``path``) when export is impossible or the
    two disagree by more than :data:`ONNX_TOLERANCE` anywhere.
    """
    import logging

    reason = onnx_unavailable()
    if reason:
        raise OnnxExportError(f"cannot export model.onnx: {reason}")
    import onnxruntime as ort

    check_x = np.asarray(check_x, dtype=np.float32)
    graph = model if graph is None else graph
    graph(check_x[:1])  # a freshly loaded model must have been called once before it can be exported
    # tf2onnx logs every conversion step at INFO through absl/tf2onnx loggers: keep the output clean.
    for name in ("tf2onnx", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # tf2onnx probes np.object: a NumPy notice, not ours to act on
            warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
            graph.export(str(path), format="onnx", verbose=False)
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise OnnxExportError(f"Keras ONNX export failed: {type(exc).__name__}: {exc}") from exc
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # e.g. an op the exporter emits but this ONNX Runtime lacks (gelu -> Erfc)
        path.unlink(missing_ok=True)
        raise OnnxExportError(
            f"ONNX Runtime cannot load the exported model: {type(exc).__name__}: {exc}"
        ) from exc
    inp = sess.get_inputs()[0].name
    worst = 0.0
    for start in range(0, len(check_x), 4096):
        chunk = check_x[start : start + 4096]
        got = np.asarray(sess.run(None, {inp: chunk})[0], dtype=np.float64)
        ref = np.asarray(model.predict(chunk, batch_size=4096, verbose=0), dtype=np.float64)
        if got.shape != ref.shape:
            path.unlink(missing_ok=True)
            raise OnnxExportError(f"ONNX output shape {got.shape} != Keras {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
        bad = ~np.isclose(got, ref, rtol=ONNX_TOLERANCE, atol=ONNX_TOLERANCE)
        if bad.any():
            path.unlink(missing_ok=True)
            i = start + int(np.argwhere(bad)[0][0])
            raise OnnxExportError(
                f"ONNX Runtime differs from Keras on row {i} (max abs diff {worst:.3g} > {ONNX_TOLERANCE})"
            )
    import onnx

    opset = {o.domain or "ai.onnx": o.version for o in onnx.load(str(path)).opset_import}
    return {
        "file": B.ONNX_FILE,
        "opset": opset,
        "rows_checked": int(len(check_x)),
        "max_abs_diff_vs_keras": worst,
        "tolerance": ONNX_TOLERANCE,
        "onnxruntime": ort.__version__,
        "graph": "members side by side" if graph is not model else "as model.h5",
    }


def _save_h5(model, path: Path) -> None:
    """Save as Keras HDF5 without optimizer state.

    The bundle contract is ``.h5`` on purpose (serving and other tools read it
    with h5py), so Keras's "legacy format" notice is filtered out here.
    """
    import logging

    class _DropLegacyNotice(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "HDF5 file via `model.save()`" not in record.getMessage()

    flt = _DropLegacyNotice()
    absl = logging.getLogger("absl")
    absl.addFilter(flt)
    try:
        model.save(str(path), include_optimizer=False)
    finally:
        absl.removeFilter(flt)


def write_model_card(staging: Path, manifest: dict, metrics: dict, preprocessing: dict) -> Path:
    """MODEL_CARD.md from the bundle's own documents (hashed by the manifest like the rest)."""
    from training import model_card

    path = staging / model_card.CARD_FILE
    card = model_card.render({"manifest": manifest, "metrics": metrics, "preprocessing": preprocessing})
    path.write_text(card, encoding="utf-8")
    return path


def export_bundle(
    dest: Path,
    *,
    name: str,
    model,
    preprocessing: dict,
    metrics: dict,
    test_split: dict,
    manifest: dict,
    report_files: dict[str, Path],
    check_x: np.ndarray | None = None,
    skip_onnx: bool = False,
    reference: dict | None = None,
) -> Path:
    """Write every file into a staging dir next to ``dest``, then seal and rename it.

    ``check_x`` (model inputs, e.g. the whole test split) is what ONNX Runtime must
    reproduce Keras on, besides the golden pairs. Without ``model.onnx`` a bundle
    cannot be served: where ONNX export is impossible this raises
    :class:`OnnxExportError` before writing anything, unless ``skip_onnx`` asks for
    such a bundle (sealed without it, with a warning naming ``add-onnx``).
    ``reference`` is the drift reference profile (:func:`dlqr.drift.build_reference`),
    written as ``reference.json`` and hashed by the manifest like every file.
    """
    if not skip_onnx:
        require_onnx_export()
    staging = B.staging_dir(dest)
    try:
        _save_h5(model, staging / B.MODEL_FILE)
        manifest = dict(manifest)
        golden_x = processing.model_input(
            np.asarray([_golden_row(name, g, preprocessing) for g in manifest.get("golden", [])]), preprocessing
        ) if manifest.get("golden") else np.zeros((0, get_card(name).input_dim), np.float32)  # fmt: skip
        rows = golden_x if check_x is None else np.concatenate([golden_x, np.asarray(check_x, np.float32)])
        if not skip_onnx:
            manifest["onnx"] = export_onnx(
                model, staging / B.ONNX_FILE, rows, _serving_graph(name, manifest, model)
            )
        else:
            warnings.warn(
                f"{name}: bundle sealed WITHOUT model.onnx (--skip-onnx); serving needs it. Add it on a "
                f"machine with TensorFlow: python -m training add-onnx {dest}",
                stacklevel=2,
            )
        B.dump_json(preprocessing, staging / B.PREPROCESSING)
        B.dump_json(metrics, staging / B.METRICS)
        B.dump_json(test_split, staging / B.TEST_SPLIT)
        if reference is not None:
            B.dump_json(reference, staging / drift.REFERENCE_FILE)
        (staging / "report").mkdir()
        for rel, src in report_files.items():
            shutil.copyfile(src, staging / "report" / rel)
        manifest = {"model": name, **manifest}
        write_model_card(staging, manifest, metrics, preprocessing)
        return B.write_bundle(staging, dest, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # an interrupted export leaves nothing bundle-like
        raise


def _serving_graph(name: str, manifest: dict[str, Any], model):
    """What ``model.onnx`` is exported from: ``model`` itself, or a folded ensemble unfolded."""
    from training.ensemble import unfold

    return unfold(name, (manifest.get("hyperparameters") or {}).get("model") or {}, model)


def _golden_row(name: str, pair: dict[str, Any], prep: dict) -> np.ndarray:
    """A golden pair's API instance back as a row in the bundle's feature order."""
    card = get_card(name)
    inst = TypeAdapter(card.instance).validate_python(pair["input"])
    return card.rows([inst], prep["features"])[0]


def add_onnx(bundle_dir: Path, check_x: np.ndarray | None = None) -> dict[str, Any]:
    """Add (or replace) ``model.onnx`` in an existing bundle, re-sealing its manifest atomically.

    Exports from the bundle's own ``model.h5``, checks ONNX Runtime against Keras on the
    golden pairs plus ``check_x`` (model inputs, e.g. the recorded test split), then writes
    the whole bundle anew into a staging directory and swaps it in, so a failure leaves
    the old bundle untouched.
    """
    import json

    import keras

    bundle_dir = Path(bundle_dir)
    b = B.load_bundle(bundle_dir)
    model = keras.saving.load_model(str(b.model_path), compile=False, safe_mode=True)
    golden = b.manifest.get("golden") or []
    x = processing.model_input(
        np.asarray([_golden_row(b.name, g, b.preprocessing) for g in golden]), b.preprocessing
    )
    rows = x if check_x is None else np.concatenate([x, np.asarray(check_x, np.float32)])
    staging = B.staging_dir(bundle_dir)
    try:
        shutil.rmtree(staging)
        shutil.copytree(bundle_dir, staging)
        (staging / B.MANIFEST).unlink()
        (staging / B.ONNX_FILE).unlink(missing_ok=True)
        info = export_onnx(model, staging / B.ONNX_FILE, rows, _serving_graph(b.name, b.manifest, model))
        sealed = json.loads((bundle_dir / B.MANIFEST).read_text(encoding="utf-8"))
        manifest = {k: v for k, v in sealed.items() if k not in ("files", "bundle_format")}
        manifest["onnx"] = {**info, "added": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        B.write_bundle(staging, bundle_dir, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest["onnx"]


def add_reference(bundle_dir: Path, train_rows: np.ndarray) -> dict[str, Any]:
    """Add (or replace) ``reference.json`` in an existing bundle, re-sealing its manifest atomically.

    ``train_rows`` are the bundle's training rows in API units. The model's outputs on
    them come from the bundle's own ``model.onnx`` through ONNX Runtime (no Keras needed);
    like :func:`add_onnx`, the whole bundle is written anew into a staging directory and
    swapped in, so a failure leaves the old bundle untouched. Every other file keeps its bytes.
    """
    import json

    import onnxruntime as ort

    bundle_dir = Path(bundle_dir)
    b = B.load_bundle(bundle_dir)
    if not b.has_onnx:
        raise B.BundleError(
            "the bundle has no model.onnx (add it first: python -m training add-onnx)", bundle_dir
        )
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(b.onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
    x = processing.model_input(train_rows, b.preprocessing)
    inp = sess.get_inputs()[0].name
    out = np.concatenate(
        [np.asarray(sess.run(None, {inp: x[i : i + 4096]})[0], np.float64) for i in range(0, len(x), 4096)]
    )
    source = {
        "split": "train",
        "rows": int(len(train_rows)),
        "added": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    reference = drift.build_reference(get_card(b.name), train_rows, out, b.preprocessing, source)
    staging = B.staging_dir(bundle_dir)
    try:
        shutil.rmtree(staging)
        shutil.copytree(bundle_dir, staging)
        (staging / B.MANIFEST).unlink()
        B.dump_json(reference, staging / drift.REFERENCE_FILE)
        sealed = json.loads((bundle_dir / B.MANIFEST).read_text(encoding="utf-8"))
        manifest = {k: v for k, v in sealed.items() if k not in ("files", "bundle_format")}
        B.write_bundle(staging, bundle_dir, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return reference
