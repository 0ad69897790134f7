"""Folding a trained ensemble into one Dense chain computes the members' averaged output."""

from __future__ import annotations

import numpy as np
import pytest

from dlqr.card import get as get_card
from training import ensemble as EN

CFG = {"hidden": [16, 8, 4], "activation": "relu", "dropout": 0.1, "l2": 1e-5, "members": 3}


@pytest.mark.parametrize("name", ["wine", "seizure", "digit"])
def test_fold_equals_member_average(name, tmp_path):
    import keras

    trained = EN.build_training_model(name, CFG, seed=7)
    logits = keras.Model(trained.input, trained.get_layer("members").output)
    x = np.random.default_rng(0).normal(size=(64, get_card(name).input_dim)).astype(np.float32)
    z = np.asarray(logits(x), dtype=np.float64)  # (n, k * out_dim): each member's pre-activation output
    mean_logit = z.reshape(len(x), 3, -1).mean(axis=1)
    expected = {
        "wine": mean_logit,
        "seizure": 1.0 / (1.0 + np.exp(-mean_logit)),
        "digit": np.exp(mean_logit) / np.exp(mean_logit).sum(axis=1, keepdims=True),
    }[name]
    folded = EN.fold(name, CFG, trained)
    got = np.asarray(folded(x), dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The folded model is a plain Dense chain, exported to ONNX like any other: ONNX Runtime reproduces it.
    assert all(type(layer).__name__ == "Dense" for layer in folded.layers)
    from serving.registry import OnnxForward, ort_session
    from training.export import export_onnx

    path = tmp_path / "folded.onnx"
    export_onnx(folded, path, x)
    np.testing.assert_allclose(OnnxForward(ort_session(path.read_bytes()))(x), got, rtol=1e-5, atol=1e-6)
    if name == "wine":  # linear output: exactly the mean of the members' predictions
        np.testing.assert_allclose(
            got, np.asarray(trained(x)).mean(axis=1, keepdims=True), rtol=1e-5, atol=1e-6
        )


def test_tile_targets_shapes():
    assert EN.tile_targets("wine", np.arange(5.0), 3).shape == (5, 3)
    assert EN.tile_targets("digit", np.eye(10)[:4], 2).shape == (4, 2, 10)
    with pytest.raises(ValueError, match="members"):
        EN.n_members({"members": 0})
