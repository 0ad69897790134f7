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


def test_baseline_in_a_process_pool_gives_the_inline_figures():
    """`train` fits the baselines in spawned worker processes while the network trains: same figures."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from training import pipeline as P

    prepared = {name: _prepared(name) for name in ("wine", "seizure", "digit")}
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        waits = {
            n: P.start_baseline(pool, p, 42, cfg.get("operating_point")) for n, (p, cfg) in prepared.items()
        }
        for p, _ in prepared.values():
            p.preprocessing["threshold"] = {"value": 0.5}  # what evaluation does meanwhile: not seen
        pooled = {n: wait() for n, wait in waits.items()}
    for name, (p, cfg) in prepared.items():
        inline = P.start_baseline(None, p, 42, cfg.get("operating_point"))()
        drop = {"fit_seconds"}
        assert {k: v for k, v in pooled[name].items() if k not in drop} == {
            k: v for k, v in inline.items() if k not in drop
        }, name
