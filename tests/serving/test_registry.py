"""Model loading: bundle verification, golden self-test, refusal of anything unsafe."""

from __future__ import annotations

import json
import shutil

import pytest

from serving.registry import Registry, compare_prediction
from serving.schemas import build_schemas
from tests.serving import bundles

VALIDATORS = {n: s.instance_adapter.validate_python for n, s in build_schemas(256).items()}


def load(root, names=("wine", "seizure", "digit")) -> Registry:
    reg = Registry(root, VALIDATORS, names=names)
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
        assert state.model.selftest["keras_crosscheck_max_abs_diff"] <= 1e-5


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
    ids=["tampered-model", "truncated-json", "half-written", "missing-file", "extra-file", "missing-bundle"],
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
    assert state.status == "failed" and "golden pair 1 mismatch" in state.reason
    assert state.path.endswith("wine/manifest.json")


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

    _rebuild(artifacts_copy, "wine", manifest_hook=bad)
    assert "not a valid API instance" in load(artifacts_copy, ["wine"]).states["wine"].reason


def test_unsupported_layer_is_refused(artifacts_copy):
    import keras

    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    _rebuild(artifacts_copy, "wine", model=model)
    state = load(artifacts_copy, ["wine"]).states["wine"]
    assert (
        state.status == "failed" and "BatchNormalization" in state.reason and state.path.endswith("model.h5")
    )


def test_wrong_shapes_are_refused(artifacts_copy):
    import keras

    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])  # wine needs 1 output
    _rebuild(artifacts_copy, "wine", model=model, manifest_hook=lambda m: m.update(golden=[]))
    assert "10 -> 2" in load(artifacts_copy, ["wine"]).states["wine"].reason


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


def test_not_an_h5_file_is_refused(artifacts_copy):
    bundles.reseal(artifacts_copy / "wine", lambda d: (d / "model.h5").write_bytes(b"not hdf5 at all"))
    state = load(artifacts_copy, ["wine"]).states["wine"]
    assert state.status == "failed" and "Keras cannot load model.h5" in state.reason


def test_background_loading_reports_progress(artifacts):
    seen = []
    reg = Registry(artifacts, VALIDATORS, on_change=lambda s: seen.append((s.name, s.status)))
    assert {s.status for s in reg.states.values()} == {"pending"}
    reg.start_background()
    assert reg.wait(timeout=120)
    assert seen[:2] == [("wine", "loading"), ("wine", "ready")] and ("digit", "ready") in seen
    assert reg.ready_at is not None


def test_compare_prediction_tolerates_only_float_noise():
    prep = bundles.preprocessing("seizure", threshold=0.5)
    want = {"probability": 0.5000001, "seizure": True, "threshold": 0.5}
    # a decision flip exactly at the threshold is float noise, not a mismatch
    assert (
        compare_prediction(
            "seizure", {"probability": 0.4999999, "seizure": False, "threshold": 0.5}, want, prep
        )
        is None
    )
    assert compare_prediction("seizure", {"probability": 0.9, "seizure": True, "threshold": 0.5}, want, prep)
    digit = {"digit": 3, "confidence": 0.9, "probabilities": [0.0] * 3 + [0.9] + [0.1 / 6] * 6}
    assert compare_prediction("digit", {**digit, "digit": 4}, digit, bundles.preprocessing("digit"))
