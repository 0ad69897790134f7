"""Bundle sealing and verification (dlqr/bundle.py): the on-disk contract of both halves."""

from __future__ import annotations

import json

import pytest

from dlqr import bundle as B


def _staging(tmp_path, name="wine"):
    dest = tmp_path / "artifacts" / name
    st = B.staging_dir(dest)
    for f in B.REQUIRED_FILES:
        (st / f).write_text(json.dumps({"f": f}))
    (st / "report").mkdir()
    (st / "report" / "plot.png").write_bytes(b"\x89PNG fake")
    return st, dest


def test_seal_and_verify(tmp_path):
    st, dest = _staging(tmp_path)
    B.write_bundle(st, dest, {"model": "wine", "version": "1"})
    assert not st.exists()
    m = B.verify_bundle(dest, "wine")
    assert set(m["files"]) == {*B.REQUIRED_FILES, "report/plot.png"}
    b = B.load_bundle(dest, "wine")
    assert b.version == "1" and b.model_sha256 == B.sha256_file(dest / B.MODEL_FILE)


@pytest.mark.parametrize(
    "tamper, msg",
    [
        (lambda d: (d / B.MODEL_FILE).write_text("evil"), "sha256 mismatch for model.h5"),
        (lambda d: (d / "report" / "plot.png").unlink(), "missing file report/plot.png"),
        (lambda d: (d / "extra.bin").write_bytes(b"x"), "files not in manifest: extra.bin"),
        (lambda d: (d / B.MANIFEST).unlink(), "missing file manifest.json"),
        (lambda d: (d / B.MANIFEST).write_text("{not json"), "unreadable JSON"),
    ],
)
def test_tampering_is_detected_and_names_the_file(tmp_path, tamper, msg):
    st, dest = _staging(tmp_path)
    B.write_bundle(st, dest, {"model": "wine", "version": "1"})
    tamper(dest)
    with pytest.raises(B.BundleError, match=msg):
        B.verify_bundle(dest, "wine")


def test_unknown_format_and_wrong_model_and_unsafe_path(tmp_path):
    st, dest = _staging(tmp_path)
    B.write_bundle(st, dest, {"model": "wine", "version": "1"})
    with pytest.raises(B.BundleError, match="expected 'digit'"):
        B.verify_bundle(dest, "digit")
    m = json.loads((dest / B.MANIFEST).read_text())
    m["bundle_format"] = 99
    (dest / B.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(B.BundleError, match="unknown bundle format 99"):
        B.verify_bundle(dest)
    m["bundle_format"] = 1
    m["files"]["../escape"] = "0" * 64
    (dest / B.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(B.BundleError, match="unsafe path"):
        B.verify_bundle(dest)


def test_seal_refuses_incomplete_staging(tmp_path):
    st, dest = _staging(tmp_path)
    (st / B.METRICS).unlink()
    with pytest.raises(B.BundleError, match="missing metrics.json"):
        B.write_bundle(st, dest, {"model": "wine", "version": "1"})
    assert not dest.exists()


def test_replacing_a_bundle_keeps_the_old_one_until_the_new_is_sealed(tmp_path):
    st, dest = _staging(tmp_path)
    B.write_bundle(st, dest, {"model": "wine", "version": "1"})
    st2, _ = _staging(tmp_path)
    (st2 / B.MODEL_FILE).write_text("v2 model")
    B.write_bundle(st2, dest, {"model": "wine", "version": "2"})
    assert B.load_bundle(dest).version == "2"
    assert [p.name for p in dest.parent.iterdir()] == ["wine"]  # no temp dirs left behind


def test_onnx_file_is_optional_but_hashed_when_present(tmp_path):
    st, dest = _staging(tmp_path)
    B.write_bundle(st, dest, {"model": "wine", "version": "1"})
    b = B.load_bundle(dest, "wine")
    assert not b.has_onnx and b.onnx_sha256 is None and b.onnx_path == dest / B.ONNX_FILE
    st, dest = _staging(tmp_path)
    (st / B.ONNX_FILE).write_bytes(b"onnx bytes")
    B.write_bundle(st, dest, {"model": "wine", "version": "2"})
    b = B.load_bundle(dest, "wine")
    assert b.has_onnx and b.onnx_sha256 == B.sha256_file(dest / B.ONNX_FILE)
    (dest / B.ONNX_FILE).write_bytes(b"evil bytes")
    with pytest.raises(B.BundleError, match="sha256 mismatch for model.onnx") as exc:
        B.verify_bundle(dest)
    assert exc.value.path == str(dest / B.ONNX_FILE)


def test_read_json_names_the_file(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    assert B.read_json(tmp_path / "x.json") == {"a": 1}
    with pytest.raises(B.BundleError, match="missing file y.json"):
        B.read_json(tmp_path / "y.json")
    (tmp_path / "z.json").write_text("{oops")
    with pytest.raises(B.BundleError, match="unreadable JSON in z.json"):
        B.read_json(tmp_path / "z.json")


def test_a_sealed_bundle_directory_has_the_usual_mode_not_mkdtemps_0700(tmp_path):
    # A bundle trained (or re-sealed by add-onnx) as one user is served as another: the image's
    # uid 10001 copies artifacts/ with their modes, and a 0700 version directory was refused.
    import os

    old = os.umask(0o022)
    try:
        st, dest = _staging(tmp_path)
        B.write_bundle(st, dest, {"model": "wine", "version": "1"})
        assert dest.stat().st_mode & 0o777 == 0o755
        st, dest = _staging(tmp_path)  # replacing a sealed bundle in place
        B.write_bundle(st, dest, {"model": "wine", "version": "2"})
        assert dest.stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)
