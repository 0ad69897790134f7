"""The NumPy fast path reproduces Keras, and refuses what it cannot reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serving import processing
from serving.fastpath import UnsupportedModelError, from_keras, keras_forward
from serving.spec import INPUT_DIMS
from tests.conftest import REPO_ROOT, shared_data_dir
from tests.serving import bundles

TOL = 1e-5
#: The book architectures (training/configs/*.toml defaults).
BOOK = {
    "wine": {"hidden": (32, 32, 32, 32, 16), "dropout": 0.0},
    "seizure": {"hidden": (128, 64, 64, 32, 16), "dropout": 0.0},
    "digit": {"hidden": (512, 256, 128), "dropout": 0.5},
}


def test_dense_relu_dropout_chain_matches_keras():
    model = bundles.build_model("digit", hidden=(64, 32), dropout=0.5, seed=3)
    mlp = from_keras(model)
    x = np.random.default_rng(0).random((50, 784), dtype=np.float32)
    assert np.abs(mlp(x) - keras_forward(model, x)).max() <= TOL
    assert [op["activation"] for op in mlp.describe()] == ["relu", "relu", "softmax"]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "linear"])
def test_other_activations_match_keras(activation):
    model = bundles.build_model("seizure", hidden=(16,), activation=activation, seed=1)
    x = np.random.default_rng(1).normal(size=(20, 178)).astype(np.float32)
    assert np.abs(from_keras(model)(x) - keras_forward(model, x)).max() <= TOL


def test_sigmoid_and_softmax_are_stable_for_extreme_logits():
    import keras

    for out_act, dim in (("sigmoid", 1), ("softmax", 10)):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(dim, activation=out_act)])
        model.layers[0].set_weights([np.full((4, dim), 1e3, np.float32), np.zeros(dim, np.float32)])
        x = np.array([[1, 1, 1, 1], [-1, -1, -1, -1]], np.float32) * 1e3
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y = from_keras(model)(x)
        assert np.isfinite(y).all()


def test_separate_activation_layer_and_no_bias():
    import keras

    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(8, use_bias=False),
            keras.layers.Activation("relu"),
            keras.layers.Dense(1),
        ]
    )
    x = np.random.default_rng(2).normal(size=(5, 10)).astype(np.float32)
    assert np.abs(from_keras(model)(x) - keras_forward(model, x)).max() <= TOL


def test_functional_chain_is_accepted():
    import keras

    inp = keras.Input((10,))
    out = keras.layers.Dense(1)(keras.layers.Dense(4, activation="relu")(inp))
    model = keras.Model(inp, out)
    x = np.ones((2, 10), np.float32)
    assert np.abs(from_keras(model)(x) - keras_forward(model, x)).max() <= TOL


def _unsupported_models():
    import keras

    yield (
        "batchnorm",
        keras.Sequential(
            [
                keras.Input((10,)),
                keras.layers.Dense(4),
                keras.layers.BatchNormalization(),
                keras.layers.Dense(1),
            ]
        ),
    )
    yield "activation", keras.Sequential([keras.Input((10,)), keras.layers.Dense(1, activation="gelu")])
    yield (
        "conv",
        keras.Sequential(
            [keras.Input((10, 1)), keras.layers.Conv1D(2, 3), keras.layers.Flatten(), keras.layers.Dense(1)]
        ),
    )
    inp = keras.Input((10,))
    h = keras.layers.Dense(10)(inp)
    yield "residual", keras.Model(inp, keras.layers.Dense(1)(keras.layers.Add()([inp, h])))
    yield "float16", keras.Sequential([keras.Input((10,)), keras.layers.Dense(1, dtype="float16")])


def test_unsupported_layers_are_refused_not_guessed():
    seen = []
    for label, model in _unsupported_models():
        with pytest.raises(UnsupportedModelError):
            from_keras(model)
        seen.append(label)
    assert len(seen) == 5


def test_bad_input_shape_is_an_error():
    mlp = from_keras(bundles.build_model("wine"))
    with pytest.raises(ValueError, match="shape"):
        mlp(np.zeros((1, 9), np.float32))


# --------------------------------------------------------------- real test sets


def _real_test_rows(name: str, data_dir: Path, bundle_dir: Path | None) -> np.ndarray:
    """Raw rows of the real test split (from the bundle's test_split.json when given)."""
    from training import data as D

    split = json.loads((bundle_dir / "test_split.json").read_text()) if bundle_dir else None
    if name == "wine":
        ds = D.load_wine(data_dir)
        idx = split["test_ids"] if split else D.random_split(len(ds.y), (0.7, 0.15, 0.15), 42)["test"]
        return ds.x[np.asarray(idx)]
    if name == "seizure":
        ds = D.load_seizure(data_dir)
        if split:
            pos = {rid: i for i, rid in enumerate(ds.ids)}
            return ds.x[[pos[r] for r in split["test_ids"]]]
        return ds.x[D.grouped_split(ds.groups, ds.y, (0.8, 0.1, 0.1), 42)["test"]]
    ds = D.load_mnist(data_dir)
    idx = split["test_ids"] if split else np.arange(len(ds.x_test))
    return ds.x_test.reshape(len(ds.x_test), -1)[np.asarray(idx)].astype(np.float64)


def _check_equivalence(name: str, model, prep: dict, rows: np.ndarray) -> float:
    x = processing.model_input(name, rows, prep)
    mlp = from_keras(model)
    fast = mlp(x)
    ref = keras_forward(model, x)
    diff = float(np.abs(fast.astype(np.float64) - ref).max())
    assert diff <= TOL, f"{name}: fast path differs from Keras by {diff:.3g} on {len(rows)} real test rows"
    # Requests are mostly one row or a small batch, where the sparse first-layer shortcut applies.
    one_by_one = np.concatenate([mlp(x[i : i + 1]) for i in range(300)])
    small = np.concatenate([mlp(x[i : i + 8]) for i in range(300, 620, 8)])
    for label, got, want in (("single rows", one_by_one, ref[:300]), ("batches of 8", small, ref[300:620])):
        d = float(np.abs(got.astype(np.float64) - want).max())
        assert d <= TOL, f"{name}: fast path differs from Keras by {d:.3g} on {label}"
    # the served decision is identical too (argmax / threshold / unscaled value)
    a, b = processing.postprocess(name, fast, prep), processing.postprocess(name, ref, prep)
    if name == "digit":
        ties = np.sort(ref, axis=1)[:, -1] - np.sort(ref, axis=1)[:, -2] <= TOL
        assert all(p["digit"] == q["digit"] or t for p, q, t in zip(a, b, ties, strict=True))
    return diff


@pytest.fixture(scope="module")
def data_dir() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip(
            "real datasets not found (../shared/data or $DLQR_DATA_DIR): cannot check on the real test sets"
        )
    return d


@pytest.mark.parametrize("name", ["wine", "seizure", "digit"])
def test_fast_path_equals_keras_on_real_test_set_book_architecture(name, data_dir):
    """A freshly initialised book-architecture model, on every row of the real test split."""
    model = bundles.build_model(name, seed=7, **BOOK[name])
    rows = _real_test_rows(name, data_dir, None)
    prep = bundles.preprocessing(name)
    if name != "digit":  # fit the input scaler on these rows so activations are realistic
        prep["input_scaler"] = {
            "type": "standard",
            "mean": rows.mean(0).tolist(),
            "scale": np.where(rows.std(0) > 0, rows.std(0), 1).tolist(),
        }
    assert rows.shape[1] == INPUT_DIMS[name] and len(rows) > 500
    _check_equivalence(name, model, prep, rows)


@pytest.mark.parametrize("name", ["wine", "seizure", "digit"])
def test_fast_path_equals_keras_on_real_test_set_committed_bundle(name, data_dir):
    """The committed (trained) bundle, on its recorded test split."""
    from serving.bundle import load_bundle

    root = REPO_ROOT / "artifacts" / name
    if not (root / "manifest.json").is_file():
        pytest.skip(f"no committed bundle at artifacts/{name} yet")
    import keras

    b = load_bundle(root, name)
    model = keras.saving.load_model(str(b.model_path), compile=False, safe_mode=True)
    rows = _real_test_rows(name, data_dir, root)
    _check_equivalence(name, model, b.preprocessing, rows)
