"""Model loading: bundle verification, ONNX Runtime, golden self-test, refusal of anything unsafe."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dlqr import card as cards
from serving.dataplane import DataPlane
from serving.loading import OnnxForward, ort_session
from serving.registry import Registry
from serving.schemas import build_schemas
from tests.serving import bundles
from tests.serving.bundles import MODEL_NAMES

VALIDATORS = {
    n: s.instance_adapter.validate_python
    for n, s in build_schemas(tuple(cards.get(n) for n in MODEL_NAMES), 256).items()
}


def load(root, names=MODEL_NAMES, **kw) -> Registry:
    reg = Registry(root, VALIDATORS, names=names, **kw)
    reg.load_all()
    return reg


def last_json_line(text: str, **match) -> dict:
    for line in reversed(text.strip().splitlines()):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if all(rec.get(k) == v for k, v in match.items()):
            return rec
    raise AssertionError(f"no JSON log line with {match} in:\n{text}")


@pytest.fixture(autouse=True)
def _json_logs():
    from serving import logs

    logs.configure("INFO")


def test_valid_bundles_load_and_pass_the_selftest(artifacts):
    reg = load(artifacts)
    assert reg.all_ready
    for state in reg.states.values():
        assert state.model.selftest["golden_pairs"] == 4
        assert state.model.selftest["golden_max_abs_diff"] <= 1e-5
        assert "keras_crosscheck_rows" not in state.model.selftest  # Keras only when asked for
        assert isinstance(state.model.forward, OnnxForward)
        assert state.model.runtime["runtime"] == "onnxruntime"


def test_keras_crosscheck_when_asked(artifacts):
    reg = load(artifacts, keras_check=True)
    assert reg.all_ready
    for state in reg.states.values():
        assert state.model.selftest["keras_crosscheck_rows"] == 64
        assert state.model.selftest["keras_crosscheck_max_abs_diff"] <= 1e-5


def test_sessions_use_the_configured_intra_op_threads(artifacts):
    reg = load(artifacts, names=["wine"], intra_op_threads=3)
    opts = reg.states["wine"].model.forward.session.get_session_options()
    assert opts.intra_op_num_threads == 3 and opts.inter_op_num_threads == 1
    default = load(artifacts, names=["wine"]).states["wine"].model.forward.session.get_session_options()
    assert default.intra_op_num_threads == 1


def test_served_forward_matches_a_fresh_session_on_the_same_file(artifacts):
    model = load(artifacts, ["digit"]).states["digit"].model
    x = np.random.default_rng(0).random((33, 784), dtype=np.float32)
    fresh = OnnxForward(ort_session((artifacts / "digit" / "model.onnx").read_bytes()))
    assert np.array_equal(model.forward(x), fresh(x))
    out, seconds = DataPlane().run(model, np.round(x * 255).astype(np.float64))
    assert out.shape == (33, 10) and out.dtype == np.float64 and seconds > 0


def _flip_byte(path, offset=-100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("mutate", "file", "fragment"),
    [
        (
            lambda root: _flip_byte(root / "digit" / "model.h5"),
            "digit/model.h5",
            "sha256 mismatch for model.h5",
        ),
        (
            lambda root: _flip_byte(root / "digit" / "model.onnx", offset=-20),
            "digit/model.onnx",
            "sha256 mismatch for model.onnx",
        ),
        (
            lambda root: (root / "digit" / "preprocessing.json").write_text('{"trunc'),
            "digit/preprocessing.json",
            "sha256 mismatch",
        ),
        (
            lambda root: (root / "digit" / "manifest.json").unlink(),
            "digit/manifest.json",
            "missing file manifest.json",
        ),
        (
            lambda root: (root / "digit" / "report" / "history.csv").unlink(),
            "digit/report/history.csv",
            "missing file",
        ),
        (lambda root: (root / "digit" / "extra.bin").write_bytes(b"x"), "digit/extra.bin", "not in manifest"),
        (lambda root: shutil.rmtree(root / "digit"), "digit", "does not exist"),
    ],
    ids=[
        "tampered-model",
        "tampered-onnx",
        "truncated-json",
        "half-written",
        "missing-file",
        "extra-file",
        "missing-bundle",
    ],
)
def test_broken_bundles_are_refused_with_a_log_line_naming_the_file(
    artifacts_copy, capsys, mutate, file, fragment
):
    mutate(artifacts_copy)
    reg = load(artifacts_copy)
    digit = reg.states["digit"]
    assert digit.status == "failed" and fragment in digit.reason
    assert digit.path.endswith(file)
    assert (
        reg.states["wine"].ready and reg.states["seizure"].ready
    )  # one bad bundle doesn't take the others down
    assert not reg.all_ready
    rec = last_json_line(capsys.readouterr().err, event="model_refused", model="digit")
    assert rec["level"] == "ERROR" and rec["file"].endswith(file) and fragment in rec["msg"]


def _rebuild(root, name, **kw):
    shutil.rmtree(root / name)
    bundles.write_bundle(root / name, name, **kw)


def test_golden_output_mismatch_means_not_ready(artifacts_copy):
    def corrupt(manifest):
        manifest["golden"][1]["raw_output"][0] += 1e-3

    _rebuild(artifacts_copy, "wine", manifest_hook=corrupt)
    state = load(artifacts_copy, ["wine"]).states["wine"]
    assert state.status == "failed" and "golden pair 1 mismatch on ONNX Runtime" in state.reason
    assert "max abs diff 0.001" in state.reason
    assert state.path.endswith("wine/model.onnx")  # the network that disagrees with the stored output


def test_golden_prediction_mismatch_means_not_ready(artifacts_copy):
    def corrupt(manifest):
        manifest["golden"][0]["prediction"]["alcohol"] += 0.5

    _rebuild(artifacts_copy, "wine", manifest_hook=corrupt)
    state = load(artifacts_copy, ["wine"]).states["wine"]
    assert state.status == "failed" and "prediction mismatch" in state.reason


def test_golden_from_another_model_is_caught(artifacts_copy):
    # Same architecture and bundle otherwise, but the weights are not the ones the goldens came from.
    other = bundles.build_model("seizure", seed=99)

    def swap(manifest):
        manifest["golden"] = bundles.golden_pairs(
            "seizure", other, bundles.sample_rows("seizure", 4, 5), bundles.preprocessing("seizure")
        )

    _rebuild(artifacts_copy, "seizure", manifest_hook=swap)
    assert "mismatch" in load(artifacts_copy, ["seizure"]).states["seizure"].reason


def test_missing_golden_pairs_are_refused(artifacts_copy):
    _rebuild(artifacts_copy, "wine", manifest_hook=lambda m: m.update(golden=[]))
    assert "no golden pairs" in load(artifacts_copy, ["wine"]).states["wine"].reason


def test_invalid_golden_input_is_refused(artifacts_copy):
    def bad(manifest):
        manifest["golden"][0]["input"]["ph"] = 99

    # The export itself refuses such a pair, so seal it in afterwards.
    bundles.reseal(artifacts_copy / "wine", manifest_hook=bad)
    state = load(artifacts_copy, ["wine"]).states["wine"]
    assert "golden input 0 is not a valid API instance" in state.reason
    assert state.path.endswith("wine/manifest.json")


def _other_models():
    import keras

    yield (
        "batchnorm",
        keras.Sequential(
            [
                keras.Input((10,)),
                keras.layers.Dense(8),
                keras.layers.BatchNormalization(),
                keras.layers.Dense(1),
            ]
        ),
    )
    yield (
        "conv1d",
        keras.Sequential(
            [
                keras.Input((10,)),
                keras.layers.Reshape((10, 1)),
                keras.layers.Conv1D(4, 3, activation="relu"),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(1),
            ]
        ),
    )
    inp = keras.Input((10,))
    h = keras.layers.Dense(10, activation="tanh")(inp)
    yield "residual", keras.Model(inp, keras.layers.Dense(1)(keras.layers.Add()([inp, h])))


def test_any_keras_network_is_served_through_onnx(artifacts_copy):
    """The NumPy fast path refused everything but Dense chains; ONNX Runtime serves any exported graph."""
    served = []
    for label, model in _other_models():
        _rebuild(artifacts_copy, "wine", model=model)
        state = load(artifacts_copy, ["wine"], keras_check=True).states["wine"]
        assert state.ready, (label, state.reason)
        assert state.model.selftest["keras_crosscheck_max_abs_diff"] <= 1e-5
        served.append(label)
    assert served == ["batchnorm", "conv1d", "residual"]


def test_bundle_without_onnx_is_not_ready_and_says_how_to_fix_it(artifacts_copy, capsys):
    bundles.reseal(artifacts_copy / "wine", lambda d: (d / "model.onnx").unlink())
    reg = load(artifacts_copy)
    wine = reg.states["wine"]
    assert wine.status == "failed" and "no model.onnx" in wine.reason
    assert f"python -m training add-onnx {artifacts_copy / 'wine'}" in wine.reason
    assert wine.path.endswith("wine/model.onnx")
    assert reg.states["seizure"].ready and reg.states["digit"].ready
    rec = last_json_line(capsys.readouterr().err, event="model_refused", model="wine")
    assert "add-onnx" in rec["msg"] and rec["file"].endswith("wine/model.onnx")


def test_onnx_of_another_network_fails_the_golden_pairs(artifacts_copy, tmp_path):
    # Resealed, so every hash is valid: only the self-test can tell the network is not the one
    # the golden pairs came from.
    other = bundles.write_bundle(tmp_path / "other" / "seizure", "seizure", seed=99)
    bundles.reseal(
        artifacts_copy / "seizure",
        lambda d: (d / "model.onnx").write_bytes((other / "model.onnx").read_bytes()),
    )
    reg = load(artifacts_copy)
    sz = reg.states["seizure"]
    assert sz.status == "failed" and "golden pair 0 mismatch on ONNX Runtime" in sz.reason
    assert sz.path.endswith("seizure/model.onnx")
    assert reg.states["wine"].ready and reg.states["digit"].ready


def test_onnx_that_onnx_runtime_cannot_load_is_refused(artifacts_copy):
    bundles.reseal(artifacts_copy / "digit", lambda d: (d / "model.onnx").write_bytes(b"not a protobuf"))
    state = load(artifacts_copy, ["digit"]).states["digit"]
    assert state.status == "failed" and "ONNX Runtime cannot load model.onnx" in state.reason
    assert state.path.endswith("digit/model.onnx")


def test_onnx_changed_after_verification_is_refused(artifacts_copy, monkeypatch):
    """The session is built from the very bytes whose sha256 was checked, not a second read."""
    import dlqr.bundle

    real = dlqr.bundle.load_bundle

    def swap_after_verify(root, expected_name=None):
        b = real(root, expected_name)
        _flip_byte(b.onnx_path, offset=-20)  # e.g. replaced between verification and loading
        return b

    monkeypatch.setattr("serving.loading.load_bundle", swap_after_verify)
    state = load(artifacts_copy, ["wine"]).states["wine"]
    assert state.status == "failed" and "sha256 mismatch for model.onnx" in state.reason


def test_wrong_shapes_are_refused(artifacts_copy):
    import keras

    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])  # wine needs 1 output
    _rebuild(artifacts_copy, "wine", model=model, manifest_hook=lambda m: m.update(golden=[]))
    state = load(artifacts_copy, ["wine"]).states["wine"]
    assert "the card needs 10 -> 1" in state.reason and state.path.endswith("wine/model.onnx")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"task": "regression"}, "task"),
        ({"input_dim": 9}, "input_dim"),
        ({"threshold": {"value": 1.5}}, "threshold"),
        ({"input_scaler": {"type": "minmax"}}, "input_scaler"),
    ],
)
def test_inconsistent_preprocessing_is_refused(artifacts_copy, change, fragment):
    name = "seizure"
    prep = {**bundles.preprocessing(name), **change}
    bundles.reseal(artifacts_copy / name, lambda d: (d / "preprocessing.json").write_text(json.dumps(prep)))
    state = load(artifacts_copy, [name]).states[name]
    assert state.status == "failed" and fragment in state.reason and state.path.endswith("preprocessing.json")


def test_model_h5_is_only_read_by_the_keras_crosscheck(artifacts_copy):
    bundles.reseal(artifacts_copy / "wine", lambda d: (d / "model.h5").write_bytes(b"not hdf5 at all"))
    assert load(artifacts_copy, ["wine"]).states["wine"].ready  # serving never opens model.h5
    state = load(artifacts_copy, ["wine"], keras_check=True).states["wine"]
    assert state.status == "failed" and "Keras cannot load model.h5" in state.reason
    assert state.path.endswith("wine/model.h5")


def test_keras_crosscheck_catches_an_h5_that_is_not_the_onnx(artifacts_copy, tmp_path):
    other = bundles.write_bundle(tmp_path / "other" / "wine", "wine", seed=42)
    bundles.reseal(
        artifacts_copy / "wine", lambda d: (d / "model.h5").write_bytes((other / "model.h5").read_bytes())
    )
    assert load(artifacts_copy, ["wine"]).states["wine"].ready
    state = load(artifacts_copy, ["wine"], keras_check=True).states["wine"]
    assert state.status == "failed" and "ONNX Runtime differs from Keras model.h5" in state.reason


def test_loading_reports_progress(artifacts):
    seen = []
    reg = Registry(artifacts, VALIDATORS, on_change=lambda s: seen.append((s.name, s.status)))
    assert reg.names == MODEL_NAMES  # default: every registered card
    assert {s.status for s in reg.states.values()} == {"pending"}
    reg.load_all()
    assert reg.all_ready
    assert seen[:2] == [("wine", "loading"), ("wine", "ready")] and ("digit", "ready") in seen
    assert reg.ready_at is not None
