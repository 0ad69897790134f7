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
    from serving.loading import OnnxForward, ort_session
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


@pytest.mark.parametrize("name", ["wine", "digit"])
def test_unfold_serves_the_same_function_without_the_zero_blocks(name, tmp_path):
    import keras
    import onnx

    from serving.loading import OnnxForward, ort_session
    from training.export import _serving_graph, export_onnx

    folded = EN.fold(name, CFG, EN.build_training_model(name, CFG, seed=3))
    x = np.random.default_rng(1).normal(size=(64, get_card(name).input_dim)).astype(np.float32)
    unfolded = EN.unfold(name, CFG, folded)
    np.testing.assert_allclose(unfolded(x), folded(x), rtol=1e-5, atol=1e-6)
    dense = [layer for layer in unfolded.layers if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == 3 * (len(CFG["hidden"]) + 1)  # one chain per member, no k*h-wide layer
    assert max(int(np.prod(layer.kernel.shape)) for layer in dense) == get_card(name).input_dim * 16
    graph = _serving_graph(name, {"hyperparameters": {"model": CFG}}, folded)
    path = tmp_path / "m.onnx"
    info = export_onnx(folded, path, x, graph)  # checked against the folded (.h5) model
    assert info["graph"] == "members side by side"
    assert sum(n.op_type in ("MatMul", "Gemm") for n in onnx.load(str(path)).graph.node) == len(dense)
    np.testing.assert_allclose(
        OnnxForward(ort_session(path.read_bytes()))(x), folded(x), rtol=1e-5, atol=1e-6
    )
    # a single network is exported as it is
    assert _serving_graph(name, {"hyperparameters": {"model": {**CFG, "members": 1}}}, folded) is folded


def test_unfold_refuses_a_model_that_is_not_a_fold():
    import keras

    folded = EN.fold("wine", CFG, EN.build_training_model("wine", CFG, seed=3))
    dense = [layer for layer in folded.layers if isinstance(layer, keras.layers.Dense)]
    kernel, bias = dense[1].get_weights()
    kernel[0, -1] = 0.5  # member 0's unit feeds member 2: not block-diagonal
    dense[1].set_weights([kernel, bias])
    with pytest.raises(ValueError, match="block-diagonal"):
        EN.unfold("wine", CFG, folded)
