"""The seizure spectral input transform lives in the shared preprocessing, driven by preprocessing.json."""

from __future__ import annotations

import numpy as np
import pytest

from dlqr import processing
from tests.training.test_pipeline import _synthetic
from training import config as C
from training import recipes


def test_log_abs_fft_keeps_the_dimension_and_is_the_log_spectrum():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 100, (5, 178))
    z = processing.log_abs_fft(x)
    assert z.shape == x.shape and z.dtype == np.float64
    np.testing.assert_allclose(z[:, 3], np.log1p(np.abs(np.fft.fft(x, axis=1)[:, 3])))
    np.testing.assert_allclose(z[:, 1:89], z[:, 177:89:-1], rtol=1e-12)  # mirrored bins of a real signal
    np.testing.assert_array_equal(processing.log_abs_fft(x), z)  # deterministic


def test_model_input_applies_transform_before_scaler():
    x = np.random.default_rng(1).normal(0, 50, (4, 178))
    spec = processing.log_abs_fft(x)
    prep = {
        "input_transform": {"type": "log_abs_fft"},
        "input_scaler": {"type": "standard", "mean": spec.mean(axis=0).tolist(), "scale": [2.0] * 178},
    }
    got = processing.model_input(x, prep)
    np.testing.assert_allclose(got, ((spec - spec.mean(axis=0)) / 2.0).astype(np.float32), rtol=1e-6)
    without = processing.model_input(x, {"input_scaler": prep["input_scaler"]})
    assert not np.allclose(got, without)
    with pytest.raises(ValueError, match="unknown input_transform"):
        processing.model_input(x, {**prep, "input_transform": {"type": "wavelet"}})


def test_seizure_recipe_records_the_transform_for_serving():
    p = recipes.get("seizure").prepare(C.load_config("seizure"), _synthetic("seizure"))
    assert p.preprocessing["input_transform"] == {"type": "log_abs_fft"}
    spec_train = processing.log_abs_fft(p.raw["train"])
    np.testing.assert_allclose(p.preprocessing["input_scaler"]["mean"], spec_train.mean(axis=0))
    # What the network trains on is exactly what serving computes from the raw samples.
    np.testing.assert_array_equal(p.x["val"], processing.model_input(p.raw["val"], p.preprocessing))
    np.testing.assert_allclose(p.x["train"].mean(axis=0), 0.0, atol=1e-4)
