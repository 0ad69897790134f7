"""Pre-processing and the pure post-processing functions (NumPy only, no model name anywhere)."""

from __future__ import annotations

import numpy as np
import pytest

from dlqr import processing
from tests.serving.bundles import preprocessing


def test_wine_inputs_are_standardised_in_feature_order():
    prep = preprocessing("wine")
    raw = np.array([prep["input_scaler"]["mean"]]) + np.array([prep["input_scaler"]["scale"]])
    x = processing.model_input(raw, prep)
    assert x.dtype == np.float32 and np.allclose(x, 1.0)


def test_log1p_columns_are_compressed_before_scaling():
    prep = {"input_scaler": {"type": "standard", "mean": [0.0, 0.0], "scale": [1.0, 2.0], "log1p": [1]}}
    raw = np.array([[3.0, np.e - 1]])
    x = processing.model_input(raw, prep)
    np.testing.assert_allclose(x, [[3.0, 0.5]], rtol=1e-6)
    assert raw[0, 1] == pytest.approx(np.e - 1)  # the caller's array is not modified


def test_digit_pixels_are_divided_by_255():
    x = processing.model_input(np.array([[0, 51, 255] + [0] * 781]), preprocessing("digit"))
    assert x.dtype == np.float32 and x[0, :3].tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_unknown_scaler_type_is_an_error():
    with pytest.raises(ValueError, match="unknown input scaler type 'minmax'"):
        processing.model_input(np.zeros((1, 2)), {"input_scaler": {"type": "minmax"}})


def test_compiled_scalers_give_the_same_model_input():
    for name in ("wine", "seizure", "digit"):
        prep = preprocessing(name)
        raw = np.random.default_rng(0).uniform(0, 255, size=(5, prep["input_dim"]))
        fast = processing.compiled(prep)
        assert np.array_equal(processing.model_input(raw, fast), processing.model_input(raw, prep))
        if prep["input_scaler"]["type"] == "standard":
            assert isinstance(fast["input_scaler"]["mean"], np.ndarray)
            assert isinstance(prep["input_scaler"]["mean"], list)  # the original is left alone


@pytest.mark.parametrize(
    ("scaler", "dim", "fragment"),
    [
        ({"type": "standard", "mean": [0.0] * 3, "scale": [1.0] * 3}, 3, None),
        ({"type": "standard", "mean": [0.0] * 3, "scale": [1.0] * 3, "log1p": [0, 2]}, 3, None),
        ({"type": "divide", "divisor": 255}, 3, None),
        ({"type": "standard", "mean": [0.0] * 2, "scale": [1.0] * 2}, 3, "wrong shape"),
        ({"type": "standard", "mean": [0.0] * 3, "scale": [1.0, 0.0, 1.0]}, 3, "zero/non-finite"),
        ({"type": "standard", "mean": [0.0] * 3, "scale": [1.0] * 3, "log1p": [3]}, 3, "log1p"),
        ({"type": "divide", "divisor": 0}, 3, "divisor"),
        ({"type": "minmax"}, 3, "unknown input_scaler type"),
    ],
)
def test_check_input_scaler(scaler, dim, fragment):
    problem = processing.check_input_scaler({"input_scaler": scaler}, dim)
    assert problem is None if fragment is None else fragment in problem


def test_unstandardize_threshold_and_argmax():
    assert processing.unstandardize(np.array([0.0, 1.0, -2.0]), 10.5, 1.23).tolist() == pytest.approx(
        [10.5, 11.73, 8.04]
    )
    assert processing.apply_threshold(np.array([0.2999, 0.3, 0.95]), 0.3).tolist() == [False, True, True]
    probs = np.full((2, 10), 0.05)
    probs[0, 7] = probs[1, 2] = 0.55
    idx, conf = processing.argmax_with_confidence(probs)
    assert idx.tolist() == [7, 2] and conf.tolist() == pytest.approx([0.55, 0.55])
