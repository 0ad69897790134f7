"""scikit-learn baselines: fitted on the network's own split and inputs, seeded, recomputable."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.test_pipeline import _synthetic
from training import baselines
from training import config as C
from training import train as T


def _prepared(name: str):
    cfg = C.load_config(name)
    if name == "digit":
        cfg["split"]["validation_size"] = 100
    return T.prepare(name, cfg, _synthetic(name)), cfg


@pytest.mark.parametrize("name", ["wine", "seizure", "digit"])
def test_baseline_figures_present_and_recomputable(name):
    p, cfg = _prepared(name)
    a = baselines.fit_baseline(p, seed=42, op_cfg=cfg.get("operating_point"))
    b = baselines.fit_baseline(p, seed=42, op_cfg=cfg.get("operating_point"))
    assert a["library"] == "scikit-learn" and a["params"]["random_state"] == 42
    for split in ("val", "test"):
        assert a[split]["n"] == len(p.y_true[split])
        drop = {"fit_seconds"}
        assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    key = {"wine": "mae_scaled", "seizure": "roc_auc", "digit": "accuracy"}[name]
    assert np.isfinite(a["test"][key])
    # The synthetic targets are learnable: the baseline must beat a constant guess.
    if name == "wine":
        const = np.mean(np.abs(p.y_true["test"] - np.mean(p.y_true["train"])))
        assert a["test"]["mae"] < const
    elif name == "seizure":
        assert a["test"]["roc_auc"] > 0.9 and 0 <= a["operating_point"]["value"] <= 1
    else:
        assert a["test"]["accuracy"] > 0.5


def test_baseline_sees_the_networks_inputs():
    """The seizure baseline is fitted on the transformed, scaled inputs the network gets."""
    p, cfg = _prepared("seizure")
    assert "input_transform" in p.preprocessing  # the default recipe's spectral transform
    a = baselines.fit_baseline(p, seed=0, op_cfg=cfg.get("operating_point"))
    assert a["inputs"].startswith("the network's own inputs")
