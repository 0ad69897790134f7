"""MODEL_CARD.md renders the bundle's own figures (and nothing it does not hold)."""

from __future__ import annotations

import copy

from training import model_card

MANIFEST = {
    "model": "wine",
    "version": "2031.01.02.030405",
    "created": "2031-01-02T03:04:05Z",
    "git_commit": "abc123",
    "recipe": "default",
    "description": "averaged MLPs",
    "backend": "tensorflow",
    "library_versions": {"keras": "3.99.1"},
    "data": {
        "dataset": "UCI Wine Quality (white)",
        "payload_sha256": {"winequality-white.csv": "76c3f8" * 10},
    },
    "split": {
        "strategy": "grouped_inputs",
        "seed": 42,
        "sizes": {"train": 3428, "val": 734, "test": 736},
        "distinct_inputs": {"train": 2760, "val": 595, "test": 596},
        "test_inputs_also_in_train_or_val": 0,
        "groups": "rows with an identical 10-feature input vector form one group",
    },
    "hyperparameters": {
        "model": {"hidden": [128, 64], "activation": "relu", "dropout": 0.0, "l2": 1e-5, "members": 5},
        "train": {"loss": "mae", "optimizer": "adam", "learning_rate": 0.001, "batch_size": 128},
    },
    "training": {"epochs_run": 97, "best_epoch": 67, "seconds": 41.25},
}
WINE_METRICS = {
    "test": {"n": 736, "mae": 0.2222222, "mae_scaled": 0.1818181, "rmse": 0.3333333, "r2": 0.9111111},
    "val": {"n": 734, "mae": 0.2121212, "mae_scaled": 0.1717171, "rmse": 0.3131313, "r2": 0.9222222},
    "baseline": {
        "model": "HistGradientBoostingRegressor",
        "n_iter": 667,
        "fit_seconds": 2.5,
        "test": {"n": 736, "mae": 0.2626262, "mae_scaled": 0.2121987, "rmse": 0.3636363, "r2": 0.8888888},
    },
    "book_row_split": {
        "test": {"n": 735, "mae": 0.1919191, "mae_scaled": 0.1565656, "rmse": 0.3, "r2": 0.93},
    },
    "quality_bars": {"mae_scaled": {"value": 0.1818181, "bar": 0.19, "op": "<=", "passed": True}},
}
PREP = {"model": "wine", "input_scaler": {"type": "standard", "log1p_features": ["chlorides"]}}


def _card(manifest=MANIFEST, metrics=WINE_METRICS, prep=PREP) -> str:
    return model_card.render({"manifest": manifest, "metrics": metrics, "preprocessing": prep})


def test_wine_card_shows_the_bundles_figures():
    card = _card()
    assert card.startswith("# Model card: wine")
    for figure in ("0.1818", "0.1717", "0.2122", "0.1566", "0.2222", "0.2626"):  # test/val/baseline/book
        assert figure in card, figure
    assert "| MAE (sd) | 0.1818 | 0.1717 | 0.2122 | 0.1566 |" in card
    assert "2031.01.02.030405" in card and "abc123" in card and "3,428" in card
    assert "average of 5 such networks" in card and "128-64" in card
    assert "3,951 distinct input vectors" in card  # the duplicates caveat
    assert "book's random row split" in card
    assert "HistGradientBoostingRegressor" in card and "667 iterations" in card
    assert "chlorides" in card


def test_card_follows_the_bundle_not_a_template():
    metrics = copy.deepcopy(WINE_METRICS)
    metrics["test"]["mae_scaled"] = 0.1357913
    del metrics["book_row_split"]
    card = _card(metrics=metrics)
    assert "0.1358" in card and "0.1818" not in card.split("## Metrics")[1].split("Quality bars")[0]
    assert "book's random row split, test" not in card


def test_seizure_card_states_limits_and_operating_point():
    manifest = {**MANIFEST, "model": "seizure", "split": {"strategy": "grouped", "recordings": {"test": 50}}}
    manifest["hyperparameters"] = {"model": {"hidden": [128], "activation": "relu"}, "train": {}}
    metrics = {
        "test": {
            "n": 1150,
            "roc_auc": 0.9971234,
            "accuracy": 0.9856521,
            "precision": 0.97,
            "recall": 0.96,
            "f1": 0.965,
            "threshold": 0.4321,
        },
        "operating_point": {
            "value": 0.4321,
            "policy": "max_f1",
            "val_precision": 0.98,
            "val_recall": 0.955,
            "val_f1": 0.9674,
        },
    }
    prep = {
        "model": "seizure",
        "input_transform": {"type": "log_abs_fft"},
        "input_scaler": {"type": "standard"},
    }
    card = _card(manifest, metrics, prep)
    assert "Not a medical device" in card and "one public data set" in card
    assert "0.9971" in card and "0.9857" in card and "**0.4321**" in card and "0.9674" in card
    assert "maximising F1 on the validation split" in card
    assert "log_abs_fft" in card
    assert "recordings: test 50" in card
