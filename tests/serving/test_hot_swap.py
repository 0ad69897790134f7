"""Hot swap on the real Gunicorn server under load (bounded: two ~10 s scenarios).

The short version of ``scripts/chaos_swap.py`` (which uses `hey -c 16` for 30 s):
4 keep-alive clients post to /predict/wine; half-way a new version directory is
renamed into place (or ``dlqr-models rollback`` runs). A good one is served by every worker within the poll
interval and every answer after the last worker switched comes from it; a
corrupt one is refused by every worker and the old version keeps answering.
No answer is ever non-200.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]

_spec = importlib.util.spec_from_file_location("chaos_swap", REPO_ROOT / "scripts" / "chaos_swap.py")
chaos_swap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chaos_swap)


@pytest.mark.parametrize("scenario", ["good", "corrupt", "rollback"])
def test_swap_under_load_has_no_failed_request(scenario):
    res = chaos_swap.run_scenario(
        scenario, model="wine", duration=8, concurrency=4, loader="python", poll=0.5
    )
    assert res["probe_answers"] > 50, res
    assert res["probe_non_200"] == 0, res
    if scenario in ("good", "rollback"):
        assert res["workers_switched"] == 2 and res["switch_complete_after_swap_s"] < 3, res
        assert res["answers_after_switch"] > 0 and res["old_answers_after_switch"] == 0, res
    else:
        assert res["workers_refused"] == 2 and res["refused_file"].endswith("model.onnx"), res
        assert res["first_new_answer_after_swap_s"] is None, res
    if scenario == "rollback":  # every answer after the command + one poll + the load: the previous version
        assert res["answers_after_poll_and_load"] > 0, res
        assert res["old_answers_after_poll_and_load"] == 0, res
    assert res["ok"], res
