"""The optional Keras cross-check (DLQR_KERAS_CROSSCHECK): ONNX Runtime vs model.h5 at load.

CI runs it once, on the committed bundles: every model must agree with its Keras
original within 1e-5 on 64 random in-range inputs, and the report says so.
"""

from __future__ import annotations

import pytest

from dlqr.card import names
from dlqr.tasks import ATOL
from tests.conftest import REPO_ROOT

pytest.importorskip("keras")


def test_committed_bundles_pass_the_keras_crosscheck(make_app):
    app = make_app(ARTIFACTS_DIR=REPO_ROOT / "artifacts", KERAS_CROSSCHECK=True)
    registry = app.extensions["dlqr"].registry
    assert registry.all_ready, {n: s.reason for n, s in registry.states.items()}
    for name in names():
        report = registry.states[name].model.selftest
        assert report["keras_crosscheck_rows"] == 64, report
        assert 0 <= report["keras_crosscheck_max_abs_diff"] <= ATOL, report


def test_crosscheck_refuses_an_onnx_that_differs_from_the_h5(artifacts_copy, make_app):
    """model.h5 swapped for another network (resealed, so hashes are valid): ONNX != Keras."""
    from tests.serving import bundles

    other = bundles.build_model("wine", hidden=(16, 8), seed=99)

    def swap_h5(staging):
        other.save(str(staging / "model.h5"), include_optimizer=False)

    bundles.reseal(artifacts_copy / "wine", swap_h5)
    app = make_app(ARTIFACTS_DIR=artifacts_copy, KERAS_CROSSCHECK=True)
    state = app.extensions["dlqr"].registry.states["wine"]
    assert state.status == "failed"
    assert "differs from Keras" in state.reason and state.path.endswith("model.onnx")
    assert app.extensions["dlqr"].registry.states["digit"].ready
