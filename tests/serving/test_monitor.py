"""The drift monitor (:mod:`serving.monitor`): windows, statistics and metrics, on the committed wine bundle."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dlqr import drift
from serving import monitor as M
from serving.dataplane import Observation
from tests.conftest import REPO_ROOT

ARTIFACTS = REPO_ROOT / "artifacts"


@pytest.fixture(scope="module")
def wine_app():
    from serving.app import create_app

    return create_app({"ARTIFACTS_DIR": ARTIFACTS, "MODEL_LOADING": "sync", "MODELS": ["wine"],
                       "VERSION_POLICY": "latest", "MONITOR_WINDOW_REQUESTS": 4})  # fmt: skip


def loaded_wine(app):
    return app.extensions["dlqr"].registry.states["wine"].model


def observation(model, rows: np.ndarray) -> Observation:
    out = model.forward(model.model_input(rows)).astype(np.float64)
    return Observation("wine", model.version, rows, out, [], 0.001, 0.001, None, "predict")


def reference_rows(profile: M.Profile, n: int, seed: int = 0) -> np.ndarray:
    """Rows drawn from the reference's own percentiles (the training distribution, roughly)."""
    rng = np.random.default_rng(seed)
    cols = [
        np.interp(rng.random(n), np.linspace(0, 1, 101), f.percentiles) for f in profile.reference.features
    ]
    return np.column_stack(cols)


def test_window_closes_on_requests_and_its_psi_equals_the_pure_function(wine_app):
    model = loaded_wine(wine_app)
    prof = M.load_profile(model)
    mon = M.DriftMonitor(lambda m, v: prof, window_requests=3, min_rows=1)
    batches = [reference_rows(prof, 200, s) for s in range(3)]
    for b in batches:
        mon(observation(model, b))
    res = mon.last[("wine", model.version)]
    assert res.requests == 3 and res.rows == 600 and not mon.windows
    allrows = np.concatenate(batches)
    for i, f in enumerate(prof.reference.features):
        want = drift.psi(f.counts, drift.bin_counts(allrows[:, i], f.edges))
        assert res.psi[f.name] == pytest.approx(want)
        assert res.ks[f.name] == pytest.approx(drift.ks_statistic(f.percentiles, allrows[:, i]))
    # Each input drawn from its own reference distribution (their joint, and so the
    # predictions, is not the training one).
    assert max(v for f, v in res.psi.items() if f != "prediction") < 0.2


def test_window_closes_on_time_only_with_enough_rows(wine_app):
    model = loaded_wine(wine_app)
    prof = M.load_profile(model)
    now = [0.0]
    mon = M.DriftMonitor(lambda m, v: prof, window_requests=10**6, window_seconds=60, min_rows=300,
                         clock=lambda: now[0])  # fmt: skip
    mon(observation(model, reference_rows(prof, 200)))
    now[0] = 120.0
    mon.tick()
    assert not mon.last  # 200 rows < min_rows: the window waits
    mon(observation(model, reference_rows(prof, 200, 1)))  # 400 rows, and old: closes now
    assert mon.last[("wine", model.version)].rows == 400


def test_a_version_without_reference_is_not_monitored():
    mon = M.DriftMonitor(lambda m, v: None)
    mon(Observation("wine", "x", np.zeros((1, 10)), np.zeros((1, 1)), [], 0, 0, None, "predict"))
    assert not mon.windows and not mon.last


def test_non_finite_outputs_are_left_out(wine_app):
    model = loaded_wine(wine_app)
    prof = M.load_profile(model)
    mon = M.DriftMonitor(lambda m, v: prof, window_requests=1, min_rows=1)
    obs = observation(model, reference_rows(prof, 5))
    obs.outputs[1, 0] = np.nan
    mon(obs)
    assert mon.last[("wine", model.version)].rows == 4


def test_metrics_through_predict(wine_app):
    client = wine_app.test_client()
    model = loaded_wine(wine_app)
    rows = reference_rows(M.load_profile(model), 40)
    for i in range(4):  # one window of 4 requests
        body = {
            "instances": [{f: float(v) for f, v in zip(model.features, r, strict=True)} for r in rows[i::4]]
        }
        assert client.post("/predict/wine", json=body).status_code == 200
    wine_app.extensions["dlqr"].plane.hub.join()
    text = client.get("/metrics").get_data(as_text=True)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    ver = {"model": "wine", "version": model.version}
    psi = [s for s in fams["dlqr_drift_psi"].samples if s.labels.items() >= ver.items()]
    assert {s.labels["feature"] for s in psi} == {*model.features, "prediction"}
    bins = [s for s in fams["dlqr_drift_bin"].samples if s.name.endswith("_total")
            and s.labels["feature"] == "ph" and s.labels["version"] == model.version]  # fmt: skip
    assert sum(s.value for s in bins) == 40
    shares = [s.value for s in fams["dlqr_drift_reference_share"].samples
              if s.labels["feature"] == "ph" and s.labels["version"] == model.version]  # fmt: skip
    assert sum(shares) == pytest.approx(1.0)
    rows = [s.value for s in fams["dlqr_drift_rows"].samples if s.name == "dlqr_drift_rows_total"
            and s.labels["version"] == model.version]  # fmt: skip
    assert rows == [40]  # the series the no-traffic alert watches


def test_monitor_can_be_turned_off():
    from serving.app import create_app

    app = create_app({"ARTIFACTS_DIR": ARTIFACTS, "MODEL_LOADING": "sync", "MODELS": ["wine"],
                      "MONITOR_ENABLED": False})  # fmt: skip
    assert "dlqr_monitor" not in app.extensions and not app.extensions["dlqr"].plane.hub.observers


def test_a_window_keeps_a_bounded_sample_for_ks_but_bins_every_row(wine_app):
    model = loaded_wine(wine_app)
    prof = M.load_profile(model)
    mon = M.DriftMonitor(lambda m, v: prof, window_requests=3, min_rows=1)
    mon.ks_rows = 250
    for s in range(3):
        mon(observation(model, reference_rows(prof, 200, s)))
        w = mon.windows.get(("wine", model.version))
        assert w is None or sum(len(v) for v in w.values) <= 250
    res = mon.last[("wine", model.version)]
    assert res.rows == 600 and np.isfinite(res.ks["ph"])
