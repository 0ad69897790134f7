"""Task objects: what a model's raw output means, one class per kind of output.

A task owns everything that depends on the kind of output and nothing that
depends on a particular model: post-processing (raw network output -> API
prediction), the prediction's pydantic schema, the Prometheus outcome labels,
the checks on ``preprocessing.json`` it needs, and the comparison of a
prediction with a stored golden one. Output key names come from the task's
own fields, set in the model's card (``Binary(decision="seizure")``), never
from the model's name.

``postprocessor(prep)`` returns a closure specialised to one bundle: the hot
path runs it on every request, so it works on Python floats (``tolist()``)
rather than small NumPy arrays; the pure NumPy functions it mirrors live in
:mod:`dlqr.processing` and the tests pin the two together.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, create_model

#: Golden comparison tolerance (absolute and relative) on raw outputs.
ATOL = 1e-5
RTOL = 1e-5

Postprocess = Callable[[np.ndarray], list[dict[str, Any]]]


@dataclass(frozen=True)
class TensorOutput:
    """One post-processed output as an Open Inference Protocol tensor, filled from the predictions.

    ``dims`` are the per-instance dimensions (``()``: one scalar per instance); ``key`` is the
    prediction field it is read from.
    """

    name: str
    datatype: str
    dims: tuple[int, ...]
    key: str


def _close(a: Any, b: Any, atol: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=RTOL, abs_tol=atol)


class Task:
    """Base class; subclasses are small frozen dataclasses configured by a card."""

    kind: str = ""
    #: Keras activation of the output layer (used by training recipes).
    output_activation: str = ""
    #: Histogram buckets for ``dlqr_model_predicted_value`` (regression) or ``dlqr_model_predicted_probability``
    #: (binary); None: the task has no scalar value.
    value_buckets: tuple[float, ...] | None = None

    def output_dim(self) -> int:
        raise NotImplementedError

    def output_keys(self) -> tuple[str, ...]:
        raise NotImplementedError

    def prediction_fields(self) -> dict[str, Any]:
        """pydantic field definitions of one prediction, for :meth:`prediction_model`."""
        raise NotImplementedError

    def prediction_model(self, model_name: str) -> type[BaseModel]:
        """The pydantic model of one prediction (OpenAPI, /models output schema)."""
        title = "".join(p.capitalize() for p in model_name.replace("-", "_").split("_")) + "Prediction"
        return create_model(title, **self.prediction_fields())

    def describe(self) -> str:
        raise NotImplementedError

    def tensor_outputs(self) -> tuple[TensorOutput, ...]:
        """The post-processed outputs as typed tensors (Open Inference Protocol metadata and responses)."""
        raise NotImplementedError

    def check_preprocessing(self, prep: dict[str, Any]) -> str | None:
        """What the task needs from preprocessing.json; a problem description or None."""
        return None

    def postprocessor(self, prep: dict[str, Any]) -> Postprocess:
        raise NotImplementedError

    def compare(self, got: dict[str, Any], want: dict[str, Any], prep: dict[str, Any]) -> str | None:
        """None if ``got`` matches the golden prediction ``want``; else what differs."""
        raise NotImplementedError

    def outcome_labels(self) -> tuple[str, ...]:
        """Values of the ``outcome`` label of ``dlqr_model_predictions_total``."""
        raise NotImplementedError

    def outcomes(self, preds: list[dict[str, Any]]) -> dict[str, int]:
        """Counts per outcome label for a batch of predictions."""
        raise NotImplementedError

    def values(self, preds: list[dict[str, Any]]) -> list[float] | None:
        """Scalar values for the predicted value/probability histogram (None when the task has none)."""
        return None


@dataclass(frozen=True)
class Regression(Task):
    """One standardised output, unscaled with the bundle's target scaler."""

    target: str
    units: str = ""
    description: str = ""
    value_buckets: tuple[float, ...] | None = None
    kind = "regression"
    output_activation = "linear"

    def output_dim(self) -> int:
        return 1

    def output_keys(self) -> tuple[str, ...]:
        return (self.target,)

    def prediction_fields(self) -> dict[str, Any]:
        desc = self.description or f"Predicted {self.target}" + (f", {self.units}" if self.units else "")
        return {self.target: (float, Field(description=desc + " (unscaled with the fitted target scaler)"))}

    def describe(self) -> str:
        unit = f" in {self.units}" if self.units else ""
        return f"Regression: {self.target}{unit}, unscaled from the network's standardised output."

    def tensor_outputs(self) -> tuple[TensorOutput, ...]:
        return (TensorOutput(self.target, "FP64", (), self.target),)

    def check_preprocessing(self, prep: dict[str, Any]) -> str | None:
        ts = prep.get("target_scaler") or {}
        mean, scale = ts.get("mean"), ts.get("scale")
        if not (
            isinstance(mean, int | float)
            and isinstance(scale, int | float)
            and math.isfinite(mean)
            and math.isfinite(scale)
            and scale > 0
        ):
            return "target_scaler needs numeric mean and scale > 0"
        return None

    def postprocessor(self, prep: dict[str, Any]) -> Postprocess:
        key = self.target
        mean, scale = float(prep["target_scaler"]["mean"]), float(prep["target_scaler"]["scale"])
        return lambda out: [{key: v * scale + mean} for v in out[:, 0].tolist()]

    def compare(self, got: dict[str, Any], want: dict[str, Any], prep: dict[str, Any]) -> str | None:
        if set(got) != set(want):
            return f"keys {sorted(got)} != golden {sorted(want)}"
        key = self.target
        tol = ATOL * float(prep["target_scaler"]["scale"])  # raw-output tolerance in target units
        return None if _close(got[key], want[key], tol) else f"{key} {got[key]} != golden {want[key]}"

    def outcome_labels(self) -> tuple[str, ...]:
        return ("value",)

    def outcomes(self, preds: list[dict[str, Any]]) -> dict[str, int]:
        return {"value": len(preds)}

    def values(self, preds: list[dict[str, Any]]) -> list[float] | None:
        key = self.target
        return [p[key] for p in preds]


@dataclass(frozen=True)
class Binary(Task):
    """One sigmoid output: probability, and the decision at the bundle's threshold."""

    decision: str
    description: str = ""
    kind = "binary"
    output_activation = "sigmoid"
    value_buckets: tuple[float, ...] | None = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)  # fmt: skip

    def output_dim(self) -> int:
        return 1

    def output_keys(self) -> tuple[str, ...]:
        return ("probability", self.decision, "threshold")

    def prediction_fields(self) -> dict[str, Any]:
        what = self.description or f"the positive class ({self.decision})"
        return {
            "probability": (float, Field(ge=0, le=1, description=f"Model probability of {what}")),
            self.decision: (bool, Field(description="probability >= threshold")),
            "threshold": (float, Field(description="The bundle's operating point, chosen on the validation split")),
        }  # fmt: skip

    def describe(self) -> str:
        return (
            f"Binary classification: sigmoid probability of {self.description or self.decision} and the "
            f"decision `{self.decision}` = probability >= threshold at the bundle's operating point."
        )

    def tensor_outputs(self) -> tuple[TensorOutput, ...]:
        # The probability is the network's float32 output; the decision is a boolean per instance.
        return (
            TensorOutput("probability", "FP32", (), "probability"),
            TensorOutput(self.decision, "BOOL", (), self.decision),
        )

    def check_preprocessing(self, prep: dict[str, Any]) -> str | None:
        t = (prep.get("threshold") or {}).get("value")
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0:
            return f"threshold.value {t!r} is not a probability"
        return None

    def postprocessor(self, prep: dict[str, Any]) -> Postprocess:
        t, key = float(prep["threshold"]["value"]), self.decision
        return lambda out: [{"probability": p, key: p >= t, "threshold": t} for p in out[:, 0].tolist()]

    def compare(self, got: dict[str, Any], want: dict[str, Any], prep: dict[str, Any]) -> str | None:
        if set(got) != set(want):
            return f"keys {sorted(got)} != golden {sorted(want)}"
        if not _close(got["probability"], want["probability"], ATOL):
            return f"probability {got['probability']} != golden {want['probability']}"
        if not _close(got["threshold"], want["threshold"], 0.0):
            return f"threshold {got['threshold']} != golden {want['threshold']}"
        near = abs(float(want["probability"]) - float(want["threshold"])) <= ATOL
        key = self.decision
        if got[key] != want[key] and not near:
            return f"decision {got[key]} != golden {want[key]}"
        return None

    def outcome_labels(self) -> tuple[str, ...]:
        return ("positive", "negative")

    def outcomes(self, preds: list[dict[str, Any]]) -> dict[str, int]:
        key = self.decision
        positives = sum(1 for p in preds if p[key])
        return {"positive": positives, "negative": len(preds) - positives}

    def values(self, preds: list[dict[str, Any]]) -> list[float] | None:
        return [p["probability"] for p in preds]


@dataclass(frozen=True)
class Multiclass(Task):
    """A softmax over ``classes``: the argmax class index, its probability and all of them."""

    label: str
    classes: Sequence[str] = field(default_factory=tuple)
    description: str = ""
    kind = "multiclass"
    output_activation = "softmax"

    def output_dim(self) -> int:
        return len(self.classes)

    def output_keys(self) -> tuple[str, ...]:
        return (self.label, "confidence", "probabilities")

    def prediction_fields(self) -> dict[str, Any]:
        k = len(self.classes)
        names = ", ".join(self.classes)
        return {
            self.label: (int, Field(ge=0, le=k - 1, description=f"Index of the most probable class ({names})")),
            "confidence": (float, Field(ge=0, le=1, description="Probability of that class")),
            "probabilities": (list[float], Field(min_length=k, max_length=k, description=f"Softmax output for {names}")),
        }  # fmt: skip

    def describe(self) -> str:
        return (
            f"{len(self.classes)}-way classification: argmax `{self.label}`, its probability and the "
            "full softmax vector."
        )

    def tensor_outputs(self) -> tuple[TensorOutput, ...]:
        return (
            TensorOutput(self.label, "INT64", (), self.label),
            TensorOutput("confidence", "FP32", (), "confidence"),
            TensorOutput("probabilities", "FP32", (len(self.classes),), "probabilities"),
        )

    def postprocessor(self, prep: dict[str, Any]) -> Postprocess:
        key = self.label

        def multiclass(out: np.ndarray) -> list[dict[str, Any]]:
            preds = []
            for row in out.tolist():
                k = row.index(max(row))  # first maximum, like np.argmax (outputs are finite)
                preds.append({key: k, "confidence": row[k], "probabilities": row})
            return preds

        return multiclass

    def compare(self, got: dict[str, Any], want: dict[str, Any], prep: dict[str, Any]) -> str | None:
        if set(got) != set(want):
            return f"keys {sorted(got)} != golden {sorted(want)}"
        probs_ok = len(got["probabilities"]) == len(want["probabilities"]) and all(
            _close(a, b, ATOL) for a, b in zip(got["probabilities"], want["probabilities"], strict=True)
        )
        if not probs_ok or not _close(got["confidence"], want["confidence"], ATOL):
            return f"probabilities {got['probabilities']} != golden {want['probabilities']}"
        top2 = sorted(want["probabilities"])[-2:]
        key = self.label
        if got[key] != want[key] and abs(top2[1] - top2[0]) > ATOL:
            return f"{key} {got[key]} != golden {want[key]}"
        return None

    def outcome_labels(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def outcomes(self, preds: list[dict[str, Any]]) -> dict[str, int]:
        counts = Counter(p[self.label] for p in preds)
        return {self.classes[k]: n for k, n in counts.items()}
