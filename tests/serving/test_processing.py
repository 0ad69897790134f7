"""Pre/post-processing: scaling, unscaling, threshold, argmax (pure NumPy)."""

from __future__ import annotations

import numpy as np
import pytest

from serving import processing
from tests.serving.bundles import preprocessing


def test_wine_prediction_is_unscaled_with_the_target_scaler():
    prep = preprocessing("wine")  # target mean 10.5, scale 1.23
    preds = processing.postprocess("wine", np.array([[0.0], [1.0], [-2.0]]), prep)
    assert preds == [
        {"alcohol": pytest.approx(10.5)},
        {"alcohol": pytest.approx(11.73)},
        {"alcohol": pytest.approx(8.04)},
    ]


def test_wine_inputs_are_standardised_in_feature_order():
    prep = preprocessing("wine")
    raw = np.array([prep["input_scaler"]["mean"]]) + np.array([prep["input_scaler"]["scale"]])
    x = processing.model_input("wine", raw, prep)
    assert x.dtype == np.float32 and np.allclose(x, 1.0)


def test_seizure_threshold_is_inclusive_and_reported():
    prep = preprocessing("seizure", threshold=0.3)
    preds = processing.postprocess("seizure", np.array([[0.2999], [0.3], [0.95]]), prep)
    assert [p["seizure"] for p in preds] == [False, True, True]
    assert all(p["threshold"] == 0.3 for p in preds)
    assert preds[2]["probability"] == pytest.approx(0.95)


def test_digit_argmax_confidence_and_probabilities():
    probs = np.full((2, 10), 0.05)
    probs[0, 7] = 0.55
    probs[1, 2] = 0.55
    preds = processing.postprocess("digit", probs, preprocessing("digit"))
    assert [p["digit"] for p in preds] == [7, 2]
    assert preds[0]["confidence"] == pytest.approx(0.55)
    assert len(preds[1]["probabilities"]) == 10 and isinstance(preds[1]["digit"], int)


def test_digit_pixels_are_divided_by_255():
    x = processing.model_input("digit", np.array([[0, 51, 255] + [0] * 781]), preprocessing("digit"))
    assert x.dtype == np.float32 and x[0, :3].tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_predictions_are_plain_json_types():
    import json

    for name, out in (("wine", np.array([[0.1]])), ("seizure", np.array([[0.9]])), ("digit", np.eye(10)[:1])):
        json.dumps(processing.postprocess(name, out, preprocessing(name)), allow_nan=False)


@pytest.mark.parametrize("name", ["wine", "seizure", "digit"])
def test_hot_path_postprocess_is_identical_to_the_shared_one(name):
    from serving.registry import make_postprocess

    rng = np.random.default_rng(0)
    prep = preprocessing(name, threshold=0.5) if name == "seizure" else preprocessing(name)
    if name == "digit":
        out = rng.dirichlet(np.ones(10), size=200).astype(np.float32).astype(np.float64)
        out[0] = 0.1  # a 10-way tie: both pick the first class
        out[1, 3] = out[1, 5] = 0.45
    elif name == "seizure":
        out = rng.random((200, 1)).astype(np.float32).astype(np.float64)
        out[0, 0] = 0.5  # exactly at the threshold
    else:
        out = rng.normal(size=(200, 1)).astype(np.float32).astype(np.float64)
    assert make_postprocess(name, prep)(out) == processing.postprocess(name, out, prep)
