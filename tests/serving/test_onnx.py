"""ONNX Runtime (what serving runs) reproduces Keras (what training made) within 1e-5.

Replaces the NumPy fast-path tests: the same questions (does the served network compute
what Keras computes, on every real test row, for single rows and batches, and is the
served decision the same?) asked of ``model.onnx`` in the InferenceSession serving builds.
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest

from dlqr import bundle as B
from dlqr import card as cards
from dlqr import processing, repository
from serving.loading import OnnxForward, ort_session
from tests.conftest import REPO_ROOT
from tests.serving import bundles
from tests.serving.bundles import MODEL_NAMES
from training import export as X

TOL = 1e-5
#: The book architectures (training/configs/*.toml defaults).
BOOK = {
    "wine": {"hidden": (32, 32, 32, 32, 16), "dropout": 0.0},
    "seizure": {"hidden": (128, 64, 64, 32, 16), "dropout": 0.0},
    "digit": {"hidden": (512, 256, 128), "dropout": 0.5},
}


def onnx_of(model, tmp_path, check_x: np.ndarray) -> OnnxForward:
    """Export with the training code and open it exactly as serving does."""
    path = tmp_path / f"{model.name}.onnx"
    X.export_onnx(model, path, check_x)
    return OnnxForward(ort_session(path.read_bytes()))


def keras_out(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=4096, verbose=0), dtype=np.float64)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# ------------------------------------------------------------------ networks


def test_dense_relu_dropout_chain_matches_keras(tmp_path):
    model = bundles.build_model("digit", hidden=(64, 32), dropout=0.5, seed=3)
    x = np.random.default_rng(0).random((50, 784), dtype=np.float32)
    ort = onnx_of(model, tmp_path, x[:1])
    assert max_diff(ort(x), keras_out(model, x)) <= TOL  # dropout is the identity at inference
    assert ort.input_dim == 784 and ort.output_dim == 10


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "linear", "elu", "selu"])
def test_other_activations_match_keras(tmp_path, activation):
    model = bundles.build_model("seizure", hidden=(16,), activation=activation, seed=1)
    x = np.random.default_rng(1).normal(size=(20, 178)).astype(np.float32)
    assert max_diff(onnx_of(model, tmp_path, x[:1])(x), keras_out(model, x)) <= TOL


def test_sigmoid_and_softmax_are_stable_for_extreme_logits(tmp_path):
    import keras

    for out_act, dim in (("sigmoid", 1), ("softmax", 10)):
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(dim, activation=out_act)], name=f"extreme_{out_act}"
        )
        model.layers[0].set_weights([np.full((4, dim), 1e3, np.float32), np.zeros(dim, np.float32)])
        x = np.array([[1, 1, 1, 1], [-1, -1, -1, -1]], np.float32) * 1e3
        y = onnx_of(model, tmp_path, x)(x)
        assert np.isfinite(y).all() and max_diff(y, keras_out(model, x)) <= TOL


def test_a_convolutional_digit_model_matches_keras(tmp_path):
    """The NumPy path could only serve Dense chains; ONNX Runtime runs a CNN just the same."""
    import keras

    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="cnn",
    )
    x = np.random.default_rng(2).random((64, 784), dtype=np.float32)
    assert max_diff(onnx_of(model, tmp_path, x[:1])(x), keras_out(model, x)) <= TOL


def test_bad_input_width_is_an_error(tmp_path):
    ort = onnx_of(bundles.build_model("wine"), tmp_path, np.zeros((1, 10), np.float32))
    with pytest.raises(Exception, match="dimensions"):  # onnxruntime's InvalidArgument
        ort(np.zeros((1, 9), np.float32))


# ------------------------------------------------------------ real test sets


@cache
def _dataset(name: str, data_dir: str):
    from training import train as T

    return T.load_dataset(name, data_dir)


def real_test_rows(name: str, data_dir, bundle_dir=None) -> np.ndarray:
    """Raw rows (API units) of the real test split: the bundle's recorded one, else the recipe's."""
    from training import data as D
    from training.evaluate_bundle import test_rows

    ds = _dataset(name, str(data_dir))
    if bundle_dir is not None:
        ids = B.read_json(bundle_dir / B.TEST_SPLIT)["test_ids"]
        return np.asarray(test_rows(name, ids, ds)[0], dtype=np.float64)
    if name == "wine":
        return ds.x[D.random_split(len(ds.y), (0.7, 0.15, 0.15), 42)["test"]]
    if name == "seizure":
        return ds.x[D.grouped_split(ds.groups, ds.y, (0.8, 0.1, 0.1), 42)["test"]]
    return ds.x_test.reshape(len(ds.x_test), -1).astype(np.float64)


def check_equivalence(name: str, ort: OnnxForward, model, prep: dict, rows: np.ndarray) -> float:
    """ONNX Runtime vs Keras on every row, one by one and in small batches, and the served decision."""
    x = processing.model_input(rows, prep)
    ref = keras_out(model, x)
    got = np.asarray(ort(x), dtype=np.float64)
    diff = max_diff(got, ref)
    assert diff <= TOL, f"{name}: ONNX Runtime differs from Keras by {diff:.3g} on {len(rows)} real test rows"
    # Requests are mostly one row or a small batch.
    one_by_one = np.concatenate([ort(x[i : i + 1]) for i in range(300)])
    small = np.concatenate([ort(x[i : i + 8]) for i in range(300, 620, 8)])
    for label, part, want in (("single rows", one_by_one, ref[:300]), ("batches of 8", small, ref[300:620])):
        d = max_diff(part, want)
        assert d <= TOL, f"{name}: ONNX Runtime differs from Keras by {d:.3g} on {label}"
    # the served prediction is the Keras one (argmax / threshold / unscaled value), up to ties at 1e-5
    task = cards.get(name).task
    served, keras_preds = task.postprocessor(prep)(got), task.postprocessor(prep)(ref)
    bad = [i for i, (a, b) in enumerate(zip(served, keras_preds, strict=True)) if task.compare(a, b, prep)]
    assert not bad, f"{name}: {len(bad)} served predictions differ from Keras', e.g. row {bad[0]}"
    return diff


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_equals_keras_on_every_real_test_row_committed_bundle(name, real_data_dir):
    """The committed (trained) bundle's model.onnx against its model.h5, on its recorded test split."""
    import keras

    root = repository.latest_dir(REPO_ROOT / "artifacts" / name)
    b = B.load_bundle(root, name)
    assert b.has_onnx, f"artifacts/{name} has no model.onnx: run python -m training add-onnx {root}"
    model = keras.saving.load_model(str(b.model_path), compile=False, safe_mode=True)
    ort = OnnxForward(ort_session(b.onnx_path.read_bytes()))
    rows = real_test_rows(name, real_data_dir, root)
    assert len(rows) == len(B.read_json(root / B.TEST_SPLIT)["test_ids"]) > 500
    check_equivalence(name, ort, model, b.preprocessing, rows)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_equals_keras_on_every_real_test_row_book_architecture(name, real_data_dir, tmp_path):
    """A freshly initialised book-architecture model, exported by training.export, on every real test row."""
    model = bundles.build_model(name, seed=7, **BOOK[name])
    rows = real_test_rows(name, real_data_dir)
    prep = bundles.preprocessing(name)
    if name != "digit":  # fit the input scaler on these rows so activations are realistic
        prep["input_scaler"] = {
            "type": "standard",
            "mean": rows.mean(0).tolist(),
            "scale": np.where(rows.std(0) > 0, rows.std(0), 1).tolist(),
        }
    assert rows.shape[1] == cards.get(name).input_dim and len(rows) > 500
    ort = onnx_of(model, tmp_path, processing.model_input(rows, prep))
    check_equivalence(name, ort, model, prep, rows)


@pytest.fixture(scope="module")
def committed_app():
    from serving.app import create_app

    app = create_app({"ARTIFACTS_DIR": REPO_ROOT / "artifacts", "MODEL_LOADING": "sync"})
    registry = app.extensions["dlqr"].registry
    assert registry.all_ready, {n: s.reason for n, s in registry.states.items()}
    return app


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_served_predictions_equal_keras_on_real_rows(name, real_data_dir, committed_app):
    """Through the HTTP API (request validation, scaling, ONNX Runtime, post-processing), batched."""
    import keras

    root = repository.latest_dir(REPO_ROOT / "artifacts" / name)
    b = B.load_bundle(root, name)
    card = cards.get(name)
    rows = real_test_rows(name, real_data_dir, root)
    sample = rows[np.random.default_rng(0).choice(len(rows), size=192, replace=False)]
    model = keras.saving.load_model(str(b.model_path), compile=False, safe_mode=True)
    want = card.task.postprocessor(b.preprocessing)(
        keras_out(model, processing.model_input(sample, b.preprocessing))
    )
    client = committed_app.test_client()
    served = []
    for start in range(0, len(sample), 64):
        instances = [
            card.instance_from_row(r, b.preprocessing["features"]) for r in sample[start : start + 64]
        ]
        resp = client.post(f"/predict/{name}", data=json.dumps({"instances": instances}),
                           content_type="application/json")  # fmt: skip
        assert resp.status_code == 200, resp.data
        body = resp.get_json()
        assert body["model"] == name and body["version"] == b.version
        served.extend(body["predictions"])
    assert len(served) == len(want)
    for i, (got, ref) in enumerate(zip(served, want, strict=True)):
        assert tuple(got) == card.task.output_keys()
        problem = card.task.compare(got, ref, b.preprocessing)
        assert problem is None, f"{name} row {i}: served {problem}"
