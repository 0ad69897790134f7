"""Metrics and the seizure operating-point selection."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from training import evaluate as E


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + y * 0.3, 2)  # rounding creates ties
    assert E.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_regression_metrics_units():
    m = E.regression_metrics(np.array([10.0, 12.0]), np.array([11.0, 12.0]), target_scale=2.0)
    assert m["mae"] == 0.5 and m["mae_scaled"] == 0.25
    assert m["rmse"] == pytest.approx(np.sqrt(0.5))


def test_binary_metrics_confusion():
    m = E.binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]), 0.5)
    assert m["confusion_matrix"]["matrix"] == [[1, 1], [1, 1]]
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5


def test_max_f1_threshold_is_optimal_over_all_cuts():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    op = E.choose_threshold(y, p, "max_f1")
    brute = max(f1_score(y, (p >= t).astype(int)) for t in np.unique(p))
    assert op["val_f1"] == pytest.approx(brute)
    assert f1_score(y, (p >= op["value"]).astype(int)) == pytest.approx(brute)


def test_min_recall_picks_highest_threshold_meeting_recall():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.1, 0.05])
    op = E.choose_threshold(y, p, "min_recall", min_recall=0.75)
    assert op["value"] == 0.7 and op["val_recall"] == 0.75
    op = E.choose_threshold(y, p, "min_recall", min_recall=1.0)
    assert op["value"] == 0.2 and op["val_recall"] == 1.0


def test_threshold_policy_errors():
    with pytest.raises(ValueError, match="unknown operating-point policy"):
        E.choose_threshold(np.array([0, 1]), np.array([0.2, 0.8]), "bogus")
    with pytest.raises(ValueError, match="both classes"):
        E.choose_threshold(np.array([1, 1]), np.array([0.2, 0.8]))
