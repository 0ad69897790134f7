"""Averaged ensembles of the book's MLPs, trained together and folded into one plain MLP.

``[model] members = k`` in a recipe trains ``k`` copies of the recipe's MLP
(own initial weights, own loss) side by side in one Keras graph, which on a
small network costs little more per step than training one. After training,
:func:`fold` rewrites the ``k`` members as a single ``Sequential`` of ``Dense``
layers:

* the first hidden layer concatenates the members' kernels (``d -> k*h``);
* every later hidden layer is block-diagonal, so member ``i`` only ever sees
  its own units (ReLU is element-wise, so the blocks never mix);
* the output layer stacks the members' output kernels divided by ``k`` and
  averages their biases: it computes the *mean of the members' pre-activation
  outputs*, then applies the task's output activation.

For wine (linear output) that is exactly the mean prediction; for seizure and
digit it is the mean logit (a geometric-mean ensemble), passed through the
sigmoid / softmax. The folded model holds only Dense layers, so it saves to
``.h5`` as a plain Dense stack. ``model.onnx`` is exported from :func:`unfold`:
the same weights with the members side by side again, so ONNX Runtime does not
multiply the block-diagonal kernels' zero blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlqr.card import get as get_card


def n_members(model_cfg: dict[str, Any]) -> int:
    """Ensemble size of a recipe's [model] section (1 = a single network)."""
    k = int(model_cfg.get("members", 1))
    if k < 1:
        raise ValueError(f"[model] members must be >= 1, got {k}")
    return k


def build_training_model(name: str, model_cfg: dict[str, Any], seed: int):
    """``k`` independent MLPs on one input; output ``(n, k)`` (or ``(n, k, classes)`` for digit).

    Each member has the recipe's hidden layers, dropout and L2, and its own
    seeded initial weights. Targets are tiled ``k`` times (:func:`tile_targets`),
    so the usual Keras loss averages the members' own losses.
    """
    import keras

    k = n_members(model_cfg)
    out_dim = get_card(name).output_dim
    regularizer = keras.regularizers.L2(model_cfg["l2"]) if model_cfg.get("l2") else None
    inp = keras.Input(shape=(get_card(name).input_dim,), name="features")
    heads = []
    for m in range(k):
        h = inp
        if model_cfg.get("input_dropout"):
            h = keras.layers.Dropout(
                float(model_cfg["input_dropout"]), seed=seed + 1000 * m, name=f"m{m}_in_drop"
            )(h)
        for i, units in enumerate(model_cfg["hidden"]):
            h = keras.layers.Dense(
                int(units),
                activation=model_cfg["activation"],
                kernel_regularizer=regularizer,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1000 * m + i),
                name=f"m{m}_hidden_{i}",
            )(h)
            if model_cfg.get("dropout"):
                h = keras.layers.Dropout(
                    float(model_cfg["dropout"]), seed=seed + 1000 * m + i, name=f"m{m}_dropout_{i}"
                )(h)
        heads.append(
            keras.layers.Dense(
                out_dim,
                activation="linear",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1000 * m + 999),
                name=f"m{m}_logits",
            )(h)
        )
    z = keras.layers.Concatenate(name="members")(heads) if k > 1 else heads[0]
    if get_card(name).task.kind == "multiclass":
        z = keras.layers.Reshape((k, out_dim), name="per_member")(z)
        out = keras.layers.Softmax(axis=-1, name="output")(z)
    else:
        out = keras.layers.Activation(get_card(name).task.output_activation, name="output")(z)
    return keras.Model(inp, out, name=f"{name}_members")


def tile_targets(name: str, y: np.ndarray, k: int) -> np.ndarray:
    """Targets repeated for each member: ``(n,)`` -> ``(n, k)``, ``(n, c)`` -> ``(n, k, c)``."""
    y = np.asarray(y, dtype=np.float32)
    if get_card(name).task.kind == "multiclass":
        return np.repeat(y[:, None, :], k, axis=1)
    return np.repeat(y.reshape(len(y), 1), k, axis=1)


def member_mean(name: str, out: np.ndarray) -> np.ndarray:
    """Average a training model's per-member outputs into the ensemble's ``(n, out_dim)`` output.

    Used only for monitoring during training (arithmetic mean of probabilities);
    the exported model is the folded one.
    """
    out = np.asarray(out, dtype=np.float64)
    if get_card(name).task.kind == "multiclass":
        return out.mean(axis=1)
    return out.reshape(len(out), -1).mean(axis=1, keepdims=True)


def _member_weights(model, k: int, n_hidden: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """[(kernel, bias) per layer] for each member, hidden layers then the logits layer."""
    out = []
    for m in range(k):
        layers = [model.get_layer(f"m{m}_hidden_{i}") for i in range(n_hidden)]
        layers.append(model.get_layer(f"m{m}_logits"))
        out.append([tuple(np.asarray(w, dtype=np.float32) for w in layer.get_weights()) for layer in layers])
    return out


def fold(name: str, model_cfg: dict[str, Any], trained) -> Any:
    """The trained members as one ``Sequential`` Dense model computing their averaged output."""
    import keras

    k = n_members(model_cfg)
    hidden = [int(u) for u in model_cfg["hidden"]]
    members = _member_weights(trained, k, len(hidden))
    layers: list[Any] = [keras.Input(shape=(get_card(name).input_dim,), name="features")]
    weights: list[list[np.ndarray]] = []
    for i, units in enumerate(hidden):
        if i == 0:
            kernel = np.concatenate([mw[0][0] for mw in members], axis=1)
        else:
            prev = hidden[i - 1]
            kernel = np.zeros((k * prev, k * units), dtype=np.float32)
            for m, mw in enumerate(members):
                kernel[m * prev : (m + 1) * prev, m * units : (m + 1) * units] = mw[i][0]
        bias = np.concatenate([mw[i][1] for mw in members])
        layers.append(keras.layers.Dense(k * units, activation=model_cfg["activation"], name=f"hidden_{i}"))
        weights.append([kernel, bias])
    out_kernel = np.concatenate([mw[-1][0] for mw in members], axis=0) / np.float32(k)
    out_bias = np.mean([mw[-1][1] for mw in members], axis=0).astype(np.float32)
    layers.append(
        keras.layers.Dense(
            get_card(name).output_dim, activation=get_card(name).task.output_activation, name="output"
        )
    )
    weights.append([out_kernel.astype(np.float32), out_bias])
    folded = keras.Sequential(layers, name=name)
    dense = [layer for layer in folded.layers if isinstance(layer, keras.layers.Dense)]
    for layer, w in zip(dense, weights, strict=True):
        layer.set_weights(w)
    return folded


def _block(kernel: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """``kernel[rows, cols]``, after proving the rest of those columns is exactly zero."""
    rest = np.delete(kernel[:, cols], np.arange(kernel.shape[0])[rows], axis=0)
    if np.count_nonzero(rest):
        raise ValueError("not a folded ensemble: a hidden kernel is not block-diagonal")
    return np.ascontiguousarray(kernel[rows, cols])


def unfold(name: str, model_cfg: dict[str, Any], folded) -> Any:
    """The folded model's members side by side again: the graph ONNX Runtime serves.

    :func:`fold` keeps the ``.h5`` a plain Dense stack, but its block-diagonal kernels make a
    dense matrix product multiply ``k - 1`` zero blocks for every block it needs (digit's three
    members: 2.7M multiply-adds per row instead of 1.7M). This returns a functional model with
    one Dense chain per member, the output layer split into per-member partial sums (the first
    carries the averaged bias), an ``Add`` and the task's activation: the same function, with the
    same weights, without the zeros. ``k = 1`` returns ``folded`` itself.
    """
    import keras

    k = n_members(model_cfg)
    if k == 1:
        return folded
    card = get_card(name)
    hidden = [int(u) for u in model_cfg["hidden"]]
    dense = [layer for layer in folded.layers if isinstance(layer, keras.layers.Dense)]
    if len(dense) != len(hidden) + 1:
        raise ValueError(f"not a folded ensemble: {len(dense)} Dense layers for hidden {hidden}")
    inp = keras.Input(shape=(card.input_dim,), name="features")
    partials, weights = [], []
    for m in range(k):
        h = inp
        for i, units in enumerate(hidden):
            kernel, bias = (np.asarray(w, np.float32) for w in dense[i].get_weights())
            rows = slice(None) if i == 0 else slice(m * hidden[i - 1], (m + 1) * hidden[i - 1])
            cols = slice(m * units, (m + 1) * units)
            layer = keras.layers.Dense(units, activation=model_cfg["activation"], name=f"m{m}_hidden_{i}")
            h = layer(h)
            weights.append((layer, [_block(kernel, rows, cols), np.ascontiguousarray(bias[cols])]))
        out_kernel, out_bias = (np.asarray(w, np.float32) for w in dense[-1].get_weights())
        layer = keras.layers.Dense(card.output_dim, use_bias=m == 0, name=f"m{m}_output")
        partials.append(layer(h))
        rows = slice(m * hidden[-1], (m + 1) * hidden[-1])
        weights.append((layer, [np.ascontiguousarray(out_kernel[rows])] + ([out_bias] if m == 0 else [])))
    out = keras.layers.Activation(card.task.output_activation, name="output")(keras.layers.Add()(partials))
    model = keras.Model(inp, out, name=f"{name}_members")
    for layer, w in weights:
        layer.set_weights(w)
    return model
