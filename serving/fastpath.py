"""NumPy forward pass over a loaded Keras MLP: the serving hot path.

Keras' own entry points carry a fixed per-call cost that dwarfs these small
networks (measured on the issue's 2-core machine for one digit request:
``model.predict`` ~23 req/s, ``model(x)`` 285, the same weights in NumPy
1,897). So after Keras has loaded and checked the ``.h5``, each layer's weights
are copied out into a plain float32 NumPy pipeline.

Only layers whose inference semantics are exact and simple are accepted
(Dense with a known activation, Activation, Dropout = identity at inference);
anything else raises :class:`UnsupportedModelError` and the model is reported
not ready rather than served with guessed semantics. Every model is also
cross-checked against Keras at load (see :mod:`serving.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


class UnsupportedModelError(ValueError):
    """The model holds a layer or setting the NumPy path does not reproduce exactly."""


def _relu(h: np.ndarray) -> np.ndarray:
    return np.maximum(h, 0.0, out=h)


def _linear(h: np.ndarray) -> np.ndarray:
    return h


def _sigmoid(h: np.ndarray) -> np.ndarray:
    # Numerically stable form: exp() of a non-positive number never overflows.
    e = np.exp(-np.abs(h))
    return np.where(h >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32, copy=False)


def _softmax(h: np.ndarray) -> np.ndarray:
    h -= h.max(axis=-1, keepdims=True)
    np.exp(h, out=h)
    h /= h.sum(axis=-1, keepdims=True)
    return h


def _tanh(h: np.ndarray) -> np.ndarray:
    return np.tanh(h, out=h)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": _relu,
    "linear": _linear,
    "sigmoid": _sigmoid,
    "softmax": _softmax,
    "tanh": _tanh,
}

#: First-layer sparsity shortcut: only for small batches whose inputs are mostly zeros.
SPARSE_MAX_ROWS = 16
SPARSE_MAX_FRACTION = 0.5

#: Layers that are the identity at inference time.
_IDENTITY_LAYERS = {"Dropout"}


@dataclass(frozen=True)
class DenseOp:
    """``activation(x @ kernel + bias)`` in float32."""

    kernel: np.ndarray
    bias: np.ndarray | None
    activation: str


class NumpyMLP:
    """A chain of :class:`DenseOp` evaluated with NumPy; thread-safe (no shared buffers)."""

    def __init__(self, ops: list[DenseOp]):
        if not ops:
            raise UnsupportedModelError("model has no Dense layer")
        for prev, nxt in zip(ops, ops[1:], strict=False):
            if prev.kernel.shape[1] != nxt.kernel.shape[0]:
                raise UnsupportedModelError(
                    f"layer shapes do not chain: {prev.kernel.shape} then {nxt.kernel.shape}"
                )
        self.ops = ops
        self._fns = [(op.kernel, op.bias, ACTIVATIONS[op.activation]) for op in ops]
        self.input_dim = int(ops[0].kernel.shape[0])
        self.output_dim = int(ops[-1].kernel.shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Forward pass of an (n, input_dim) array; returns (n, output_dim) float32."""
        h = np.asarray(x, dtype=np.float32)
        if h.ndim != 2 or h.shape[1] != self.input_dim:
            raise ValueError(f"expected input of shape (n, {self.input_dim}), got {h.shape}")
        fns = iter(self._fns)
        kernel, bias, act = next(fns)
        h = self._first_layer(h, kernel)
        if bias is not None:
            h += bias
        h = act(h)
        for kernel, bias, act in fns:
            h = h @ kernel  # a new array, so the in-place ops below never touch the input
            if bias is not None:
                h += bias
            h = act(h)
        return h

    def _first_layer(self, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        """``x @ kernel``, skipping the kernel rows of inputs that are zero in every row.

        An MNIST digit is ~80 % black pixels, and for a few rows the first layer's cost is
        reading its 1.6 MB kernel from memory, so reading only the rows that meet a non-zero
        input is 2-3x faster. Mathematically identical (zero terms add nothing); only the
        float32 summation order differs, which the Keras cross-checks bound (<= 1e-5).
        """
        if len(x) <= SPARSE_MAX_ROWS:
            used = np.flatnonzero(x.any(axis=0)) if len(x) > 1 else np.flatnonzero(x[0])
            if len(used) <= SPARSE_MAX_FRACTION * self.input_dim:
                return x[:, used] @ kernel[used]
        return x @ kernel

    def describe(self) -> list[dict[str, Any]]:
        """Layer summary for /models and logs."""
        return [
            {"units": int(op.kernel.shape[1]), "activation": op.activation, "bias": op.bias is not None}
            for op in self.ops
        ]


def _activation_name(layer: Any) -> str:
    act = layer.get_config().get("activation", "linear")
    if act is None:
        return "linear"
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise UnsupportedModelError(f"layer {layer.name!r}: unsupported activation {act!r}")
    return act


def _check_float32(layer: Any) -> None:
    dtype = getattr(layer, "compute_dtype", None) or "float32"
    if str(dtype) != "float32" or str(getattr(layer, "variable_dtype", "float32")) != "float32":
        raise UnsupportedModelError(
            f"layer {layer.name!r}: dtype policy {dtype!r}, only float32 is supported"
        )


def _dense_op(layer: Any) -> DenseOp:
    cfg = layer.get_config()
    _check_float32(layer)
    if cfg.get("quantization_config") or getattr(layer, "quantization_mode", None):
        raise UnsupportedModelError(f"layer {layer.name!r}: quantized Dense is not supported")
    if getattr(layer, "lora_enabled", False):
        raise UnsupportedModelError(f"layer {layer.name!r}: LoRA Dense is not supported")
    weights = layer.get_weights()
    use_bias = bool(cfg.get("use_bias", True))
    if len(weights) != (2 if use_bias else 1):
        raise UnsupportedModelError(f"layer {layer.name!r}: expected kernel{' and bias' if use_bias else ''}")
    kernel = np.ascontiguousarray(weights[0], dtype=np.float32)
    if kernel.ndim != 2:
        raise UnsupportedModelError(f"layer {layer.name!r}: kernel of rank {kernel.ndim}")
    bias = np.ascontiguousarray(weights[1], dtype=np.float32) if use_bias else None
    if bias is not None and bias.shape != (kernel.shape[1],):
        raise UnsupportedModelError(f"layer {layer.name!r}: bias shape {bias.shape} vs kernel {kernel.shape}")
    return DenseOp(kernel, bias, _activation_name(layer))


def from_keras(model: Any) -> NumpyMLP:
    """Extract a :class:`NumpyMLP` from a Keras Sequential/functional chain of supported layers."""
    inputs = getattr(model, "inputs", None) or []
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedModelError(
            f"expected one input and one output, got {len(inputs)} and {len(outputs)}"
        )
    if len(inputs[0].shape) != 2:
        raise UnsupportedModelError(f"expected a flat (batch, features) input, got shape {inputs[0].shape}")
    ops: list[DenseOp] = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer" or kind in _IDENTITY_LAYERS:
            continue
        if kind == "Dense":
            ops.append(_dense_op(layer))
        elif kind == "Activation":
            act = _activation_name(layer)
            if not ops:
                raise UnsupportedModelError(f"layer {layer.name!r}: Activation before any Dense layer")
            prev = ops[-1]
            if prev.activation != "linear":
                raise UnsupportedModelError(f"layer {layer.name!r}: stacked activations are not supported")
            ops[-1] = DenseOp(prev.kernel, prev.bias, act)
        else:
            raise UnsupportedModelError(
                f"layer {layer.name!r} of type {kind} is not supported by the NumPy path"
            )
    if type(model).__name__ != "Sequential":
        # A functional model could branch or skip; only a straight chain is safe to flatten.
        chain = [ly for ly in model.layers if type(ly).__name__ != "InputLayer"]
        for ly in chain:
            nodes = getattr(ly, "_inbound_nodes", [])
            if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
                raise UnsupportedModelError(
                    f"layer {ly.name!r}: not a simple chain (shared or multi-input layer)"
                )
    return NumpyMLP(ops)


def keras_forward(model: Any, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Reference outputs from Keras itself (inference mode), as float32 NumPy."""
    import keras

    out = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out, axis=0).astype(np.float32, copy=False)
