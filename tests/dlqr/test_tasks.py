"""Task objects: post-processing, golden comparison, metric outcomes, output schema.

The hot-path closures from ``Task.postprocessor`` work on Python floats; they must give
exactly what the pure NumPy functions of :mod:`dlqr.processing` give.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from dlqr import processing
from dlqr.tasks import ATOL, Binary, Multiclass, Regression

WINE = Regression(target="alcohol", units="% vol")
SEIZURE = Binary(decision="seizure")
DIGIT = Multiclass(label="digit", classes=tuple(str(d) for d in range(10)))
REG_PREP = {"target_scaler": {"mean": 10.5, "scale": 1.23}}
BIN_PREP = {"threshold": {"value": 0.5}}


def _float32(a: np.ndarray) -> np.ndarray:
    """What ONNX Runtime returns, widened as serving does."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


# ------------------------------------------------------- closures == pure functions


def test_regression_closure_equals_unstandardize():
    out = _float32(np.random.default_rng(0).normal(size=(200, 1)))
    got = WINE.postprocessor(REG_PREP)(out)
    want = processing.unstandardize(out[:, 0], 10.5, 1.23)
    assert [p["alcohol"] for p in got] == want.tolist()
    assert WINE.postprocessor(REG_PREP)(np.array([[0.0], [1.0], [-2.0]])) == [
        {"alcohol": pytest.approx(10.5)},
        {"alcohol": pytest.approx(11.73)},
        {"alcohol": pytest.approx(8.04)},
    ]


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.0, 1.0])
def test_binary_closure_equals_apply_threshold(threshold):
    out = _float32(np.random.default_rng(1).random((200, 1)))
    out[:3, 0] = [threshold, np.nextafter(threshold, 0), np.nextafter(threshold, 1)]  # at the operating point
    got = SEIZURE.postprocessor({"threshold": {"value": threshold}})(out)
    decisions = processing.apply_threshold(out[:, 0], threshold)
    assert [p["seizure"] for p in got] == decisions.tolist()
    assert [p["probability"] for p in got] == out[:, 0].tolist()
    assert all(p["threshold"] == threshold for p in got)
    assert got[0]["seizure"] is True  # the operating point is inclusive


def test_multiclass_closure_equals_argmax_with_confidence():
    rng = np.random.default_rng(2)
    out = _float32(rng.dirichlet(np.ones(10), size=200))
    out[0] = 0.1  # a 10-way tie: both pick the first class
    out[1, 3] = out[1, 5] = 0.45
    got = DIGIT.postprocessor({})(out)
    idx, conf = processing.argmax_with_confidence(out)
    assert [p["digit"] for p in got] == idx.tolist()
    assert [p["confidence"] for p in got] == conf.tolist()
    assert [p["probabilities"] for p in got] == out.tolist()
    assert got[0]["digit"] == 0 and got[1]["digit"] == 3


def test_predictions_are_plain_json_types():
    cases = (
        (WINE, REG_PREP, np.array([[0.1]])),
        (SEIZURE, BIN_PREP, np.array([[0.9]])),
        (DIGIT, {}, np.eye(10)[:1]),
    )
    for task, prep, out in cases:
        preds = task.postprocessor(prep)(out)
        json.dumps(preds, allow_nan=False)
        for p in preds:
            assert all(type(v) in (float, int, bool, list) for v in p.values())
            assert tuple(p) == task.output_keys()


def test_output_keys_come_from_the_card_not_the_model_name():
    alarm = Binary(decision="alarm")
    assert alarm.output_keys() == ("probability", "alarm", "threshold")
    assert set(alarm.postprocessor(BIN_PREP)(np.array([[0.7]]))[0]) == {"probability", "alarm", "threshold"}
    species = Multiclass(label="species", classes=("a", "b", "c"))
    assert species.output_keys() == ("species", "confidence", "probabilities") and species.output_dim() == 3
    assert Regression(target="price").output_keys() == ("price",)


# ------------------------------------------------------------------ schemas


def test_prediction_models_validate_what_the_closures_produce():
    for task, prep, out in (
        (WINE, REG_PREP, np.array([[0.3]])),
        (SEIZURE, BIN_PREP, np.array([[0.3]])),
        (DIGIT, {}, np.eye(10)[2:3]),
    ):
        model = task.prediction_model("some_model")
        assert model.__name__ == "SomeModelPrediction"
        assert tuple(model.model_json_schema()["properties"]) == task.output_keys()
        model.model_validate(task.postprocessor(prep)(out)[0])
    with pytest.raises(ValidationError):
        DIGIT.prediction_model("digit").model_validate(
            {"digit": 10, "confidence": 1.0, "probabilities": [0.1] * 10}
        )
    with pytest.raises(ValidationError):
        DIGIT.prediction_model("digit").model_validate(
            {"digit": 1, "confidence": 1.0, "probabilities": [0.1] * 9}
        )
    with pytest.raises(ValidationError):
        SEIZURE.prediction_model("seizure").model_validate(
            {"probability": 1.5, "seizure": True, "threshold": 0.5}
        )


def test_kinds_activations_and_descriptions():
    assert (WINE.kind, WINE.output_activation, WINE.output_dim()) == ("regression", "linear", 1)
    assert (SEIZURE.kind, SEIZURE.output_activation, SEIZURE.output_dim()) == ("binary", "sigmoid", 1)
    assert (DIGIT.kind, DIGIT.output_activation, DIGIT.output_dim()) == ("multiclass", "softmax", 10)
    assert "% vol" in WINE.describe() and "seizure" in SEIZURE.describe() and "10-way" in DIGIT.describe()


@pytest.mark.parametrize(
    ("task", "prep", "fragment"),
    [
        (WINE, REG_PREP, None),
        (WINE, {"target_scaler": {"mean": 1.0, "scale": 0}}, "scale > 0"),
        (WINE, {"target_scaler": {"mean": "1", "scale": 1.0}}, "numeric"),
        (WINE, {}, "target_scaler"),
        (SEIZURE, BIN_PREP, None),
        (SEIZURE, {"threshold": {"value": 1.5}}, "not a probability"),
        (SEIZURE, {"threshold": {"value": True}}, "not a probability"),
        (SEIZURE, {}, "not a probability"),
        (DIGIT, {}, None),
    ],
)
def test_check_preprocessing(task, prep, fragment):
    problem = task.check_preprocessing(prep)
    assert problem is None if fragment is None else fragment in problem


# ------------------------------------------------------------------ compare()


def test_regression_compare_tolerance_is_in_target_units():
    want = {"alcohol": 10.0}
    assert WINE.compare({"alcohol": 10.0 + 0.5 * ATOL * 1.23}, want, REG_PREP) is None
    assert "alcohol" in WINE.compare({"alcohol": 10.001}, want, REG_PREP)
    assert "keys" in WINE.compare({"alcohol": 10.0, "extra": 1}, want, REG_PREP)


def test_binary_compare_tolerates_only_float_noise():
    want = {"probability": 0.5000001, "seizure": True, "threshold": 0.5}
    # a decision flip exactly at the threshold is float noise, not a mismatch
    assert (
        SEIZURE.compare({"probability": 0.4999999, "seizure": False, "threshold": 0.5}, want, BIN_PREP)
        is None
    )
    assert "probability" in SEIZURE.compare(
        {"probability": 0.9, "seizure": True, "threshold": 0.5}, want, BIN_PREP
    )
    far = {"probability": 0.8, "seizure": True, "threshold": 0.5}
    assert "decision" in SEIZURE.compare({**far, "seizure": False}, far, BIN_PREP)
    assert "threshold" in SEIZURE.compare({**far, "threshold": 0.4}, far, BIN_PREP)
    assert "keys" in SEIZURE.compare({"probability": 0.8, "alarm": True, "threshold": 0.5}, far, BIN_PREP)


def test_multiclass_compare_tolerates_ties_only():
    digit = {"digit": 3, "confidence": 0.9, "probabilities": [0.0] * 3 + [0.9] + [0.1 / 6] * 6}
    assert DIGIT.compare(dict(digit), digit, {}) is None
    assert "digit 4 != golden 3" in DIGIT.compare({**digit, "digit": 4}, digit, {})
    tie = {"digit": 3, "confidence": 0.45, "probabilities": [0.0] * 3 + [0.45, 0.45] + [0.1 / 5] * 5}
    assert DIGIT.compare({**tie, "digit": 4}, tie, {}) is None  # either top class is right
    off = {**digit, "probabilities": [0.0] * 3 + [0.8] + [0.2 / 6] * 6}
    assert "probabilities" in DIGIT.compare(off, digit, {})
    assert "probabilities" in DIGIT.compare({**digit, "probabilities": digit["probabilities"][:9]}, digit, {})


# ------------------------------------------------------------ metrics hooks


def test_outcomes_and_values():
    reg = WINE.postprocessor(REG_PREP)(np.array([[0.0], [1.0]]))
    assert WINE.outcome_labels() == ("value",) and WINE.outcomes(reg) == {"value": 2}
    assert WINE.values(reg) == pytest.approx([10.5, 11.73])
    binp = SEIZURE.postprocessor(BIN_PREP)(np.array([[0.9], [0.1], [0.5]]))
    assert SEIZURE.outcome_labels() == ("positive", "negative")
    assert SEIZURE.outcomes(binp) == {"positive": 2, "negative": 1}
    assert SEIZURE.values(binp) == pytest.approx([0.9, 0.1, 0.5])
    assert SEIZURE.outcomes([]) == {"positive": 0, "negative": 0}
    mc = DIGIT.postprocessor({})(np.eye(10)[[7, 7, 2]])
    assert DIGIT.outcome_labels() == tuple(str(d) for d in range(10))
    assert DIGIT.outcomes(mc) == {"7": 2, "2": 1} and DIGIT.values(mc) is None
    species = Multiclass(label="species", classes=("setosa", "versicolor", "virginica"))
    preds = species.postprocessor({})(np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1]]))
    assert species.outcomes(preds) == {"versicolor": 1, "setosa": 1}  # class labels, not indices
    assert set(species.outcomes(preds)) <= set(species.outcome_labels())
