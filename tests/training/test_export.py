"""Export: atomic bundles, model.onnx checked against Keras, and add-onnx for bundles without it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from pydantic import ValidationError

from dlqr import bundle as B
from dlqr import processing
from tests.serving import bundles
from training import export as X


def _staging(tmp_path, name="wine"):
    dest = tmp_path / "artifacts" / name
    st = B.staging_dir(dest)
    for f in B.REQUIRED_FILES:
        (st / f).write_text(json.dumps({"f": f}))
    return st, dest


def _export_with(model, dest, version: str):
    """export_bundle with empty documents: enough to exercise the staging/rename logic."""
    return X.export_bundle(dest, name="wine", model=model, preprocessing={}, metrics={}, test_split={},
                           manifest={"version": version}, report_files={})  # fmt: skip


def test_interrupted_export_leaves_no_bundle(tmp_path, monkeypatch):
    """A crash half-way through export_bundle leaves neither a bundle nor a staging dir."""

    class BoomModel:
        def save(self, path, include_optimizer=False):
            with open(path, "wb") as fh:
                fh.write(b"partial")
            raise KeyboardInterrupt  # e.g. Ctrl-C while writing

    dest = tmp_path / "artifacts" / "wine"
    with pytest.raises(KeyboardInterrupt):
        _export_with(BoomModel(), dest, "1")
    assert not dest.exists()
    assert os.listdir(dest.parent) == []


def test_interrupted_replacement_keeps_old_bundle_valid(tmp_path):
    st, dest = _staging(tmp_path)
    B.write_bundle(st, dest, {"model": "wine", "version": "1"})

    class BoomModel:
        def save(self, path, include_optimizer=False):
            raise OSError("disk full")

    with pytest.raises(OSError):
        _export_with(BoomModel(), dest, "2")
    assert B.load_bundle(dest).version == "1"


# ---------------------------------------------------------------------- ONNX


def _ort(path):
    from serving.loading import OnnxForward, ort_session

    return OnnxForward(ort_session(path.read_bytes()))


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_this_environment_can_export_onnx():
    assert X.onnx_unavailable() is None


def test_export_writes_model_onnx_checked_against_keras(tmp_path):
    model = bundles.build_model("digit", hidden=(32,), seed=5)
    dest = bundles.write_bundle(tmp_path / "artifacts" / "digit", "digit", model=model)
    b = B.load_bundle(dest, "digit")  # sealed: model.onnx is hashed like every other file
    assert b.has_onnx and b.manifest["files"]["model.onnx"] == B.sha256_file(dest / "model.onnx")
    info = b.manifest["onnx"]
    assert info["file"] == "model.onnx" and info["rows_checked"] == 4  # the golden pairs
    assert info["max_abs_diff_vs_keras"] <= info["tolerance"] == 1e-5
    assert info["opset"]["ai.onnx"] >= 13 and info["onnxruntime"]
    x = np.random.default_rng(0).random((300, 784), dtype=np.float32)
    ref = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    assert np.abs(_ort(dest / "model.onnx")(x) - ref).max() <= 1e-5


def test_export_checks_onnx_on_every_given_row(tmp_path):
    model = bundles.build_model("wine", seed=2)
    prep = bundles.preprocessing("wine")
    check_x = processing.model_input(bundles.sample_rows("wine", 500, seed=9), prep)
    manifest = {"version": "1", "golden": X.golden_pairs("wine", model, bundles.sample_rows("wine", 3), prep)}
    dest = X.export_bundle(tmp_path / "wine", name="wine", model=model, preprocessing=prep, metrics={},
                           test_split={}, manifest=manifest, report_files={}, check_x=check_x)  # fmt: skip
    assert B.load_bundle(dest).manifest["onnx"]["rows_checked"] == 3 + 500


def test_export_fails_and_writes_nothing_when_onnx_runtime_disagrees(tmp_path, monkeypatch):
    model = bundles.build_model("seizure", seed=1)
    real_predict = model.predict
    calls = []

    def drifted(x, **kw):  # Keras' answer 1e-3 away from what the exported graph computes
        calls.append(len(x))
        return real_predict(x, **kw) + 1e-3

    monkeypatch.setattr(model, "predict", drifted)
    root = tmp_path / "artifacts"
    prep = bundles.preprocessing("seizure")
    golden = X.golden_pairs("seizure", model, bundles.sample_rows("seizure", 4), prep)
    with pytest.raises(X.OnnxExportError, match=r"differs from Keras on row 0 .*> 1e-05"):
        X.export_bundle(root / "seizure", name="seizure", model=model, preprocessing=prep, metrics={},
                        test_split={}, manifest={"version": "1", "golden": golden}, report_files={})  # fmt: skip
    assert calls, "the check must compare against Keras"
    assert not (root / "seizure").exists() and _leftovers(root) == []


def test_export_fails_and_writes_nothing_when_onnx_runtime_cannot_load_it(tmp_path, monkeypatch):
    model = bundles.build_model("wine", seed=1)

    def broken_export(path, format, verbose=False):  # e.g. an op this ONNX Runtime lacks
        with open(path, "wb") as fh:
            fh.write(b"\x08\x07garbage")

    monkeypatch.setattr(model, "export", broken_export)
    root = tmp_path / "artifacts"
    with pytest.raises(X.OnnxExportError, match="ONNX Runtime cannot load the exported model"):
        bundles.write_bundle(root / "wine", "wine", model=model)
    assert not (root / "wine").exists() and _leftovers(root) == []


def test_export_refuses_a_golden_pair_that_is_not_a_valid_instance(tmp_path):
    def bad(manifest):
        manifest["golden"][0]["input"]["ph"] = 99

    root = tmp_path / "artifacts"
    with pytest.raises(ValidationError):
        bundles.write_bundle(root / "wine", "wine", manifest_hook=bad)
    assert not (root / "wine").exists() and _leftovers(root) == []


def test_export_onnx_says_why_it_is_impossible(tmp_path, monkeypatch):
    monkeypatch.setattr(X, "onnx_unavailable", lambda: "TensorFlow is not installed (backend is 'jax')")
    with pytest.raises(X.OnnxExportError, match="cannot export model.onnx: TensorFlow is not installed"):
        X.export_onnx(bundles.build_model("wine"), tmp_path / "m.onnx", np.zeros((1, 10), np.float32))
    assert not (tmp_path / "m.onnx").exists()


def sealed_without_onnx(dest, name, monkeypatch, **kw):
    """A bundle exported where ONNX export is impossible (e.g. Keras on JAX without TensorFlow)."""
    with monkeypatch.context() as m:
        m.setattr(X, "onnx_unavailable", lambda: "TensorFlow is not installed (backend is 'jax')")
        with pytest.warns(
            UserWarning, match=r"WITHOUT model.onnx \(--skip-onnx\).*python -m training add-onnx"
        ):
            bundles.write_bundle(dest, name, skip_onnx=True, **kw)
    return dest


def test_without_onnx_export_the_bundle_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(X, "onnx_unavailable", lambda: "TensorFlow is not installed (backend is 'jax')")
    root = tmp_path / "artifacts"
    with pytest.raises(X.OnnxExportError, match=r"TensorFlow is not installed.*--skip-onnx.*add-onnx"):
        bundles.write_bundle(root / "wine", "wine")
    assert not (root / "wine").exists() and _leftovers(root) == []


def test_skip_onnx_seals_the_bundle_without_onnx_and_says_how_to_add_it(tmp_path, monkeypatch):
    dest = sealed_without_onnx(tmp_path / "artifacts" / "wine", "wine", monkeypatch)
    b = B.load_bundle(dest, "wine")
    assert not b.has_onnx and "onnx" not in b.manifest and not (dest / "model.onnx").exists()


def test_add_onnx_reseals_and_keeps_the_manifest(tmp_path, monkeypatch):
    dest = sealed_without_onnx(
        tmp_path / "artifacts" / "digit", "digit", monkeypatch, version="2026.02.03.040506"
    )
    before = B.load_bundle(dest, "digit").manifest
    check_x = np.random.default_rng(1).random((50, 784), dtype=np.float32)
    info = X.add_onnx(dest, check_x)
    after = B.load_bundle(dest, "digit").manifest  # verifies every hash
    assert info["rows_checked"] == 4 + 50 and info["max_abs_diff_vs_keras"] <= 1e-5 and info["added"]
    assert after["onnx"] == info and after["files"]["model.onnx"] == B.sha256_file(dest / "model.onnx")
    for key in ("version", "created", "golden", "git_commit", "hyperparameters", "model"):
        assert after[key] == before[key], key
    assert {k: v for k, v in after["files"].items() if k != "model.onnx"} == before["files"]
    assert _leftovers(dest.parent) == []
    import keras

    km = keras.saving.load_model(str(dest / "model.h5"), compile=False)
    ref = np.asarray(km.predict(check_x, verbose=0), dtype=np.float64)
    assert np.abs(_ort(dest / "model.onnx")(check_x) - ref).max() <= 1e-5


def test_add_onnx_that_fails_leaves_the_old_bundle_untouched(tmp_path, monkeypatch):
    dest = sealed_without_onnx(tmp_path / "artifacts" / "wine", "wine", monkeypatch)
    manifest_before = (dest / "manifest.json").read_bytes()

    def failing(model, path, check_x, graph=None):
        path.write_bytes(b"half")
        raise X.OnnxExportError("ONNX Runtime differs from Keras on row 3")

    monkeypatch.setattr(X, "export_onnx", failing)
    with pytest.raises(X.OnnxExportError):
        X.add_onnx(dest)
    assert (dest / "manifest.json").read_bytes() == manifest_before
    assert not B.load_bundle(dest, "wine").has_onnx and _leftovers(dest.parent) == []


def test_add_onnx_replaces_an_existing_onnx(tmp_path):
    dest = bundles.write_bundle(tmp_path / "artifacts" / "seizure", "seizure")
    bundles.reseal(dest, lambda d: (d / "model.onnx").write_bytes(b"stale"))
    X.add_onnx(dest)
    b = B.load_bundle(dest, "seizure")
    assert (dest / "model.onnx").read_bytes() != b"stale" and b.manifest["onnx"]["rows_checked"] == 4
