"""The end of `train`: gate verdicts, the promote command, the below-bar exit, pinning the served version."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlqr import routing as R
from tests.serving.test_models_cli import BARS_FAIL, BARS_PASS, _with_metrics
from tests.serving.test_versions import seal_as_version
from training import promotion


@pytest.fixture(scope="module")
def tiny_seizure(tmp_path_factory) -> Path:
    from tests.serving.bundles import write_bundle

    return write_bundle(tmp_path_factory.mktemp("tiny") / "seizure", "seizure")


@pytest.fixture
def repo(tiny_seizure, tmp_path) -> Path:
    root = tmp_path / "repo"
    (root / "seizure").mkdir(parents=True)
    seal_as_version(tiny_seizure, root / "seizure", "1.0")
    _with_metrics(root / "seizure", "1.0", {"roc_auc": 0.95, "accuracy": 0.9, "f1": 0.8}, BARS_PASS)
    return root


def _new(repo: Path, version: str, bars) -> dict:
    mdir = repo / "seizure"
    seal_as_version(mdir / "1.0", mdir, version)
    _with_metrics(mdir, version, {"roc_auc": 0.96, "accuracy": 0.9, "f1": 0.8}, bars)
    return {"model": "seizure", "version": version, "bundle": str(mdir / version)}


def test_pin_current_adopts_the_served_version_once(repo, capsys):
    promotion.pin_current(repo, ["seizure", "wine"])  # wine: no directory, nothing to pin
    assert R.read(repo / "seizure") == R.Routing(stable="1.0")
    assert "1.0 (served now) is pinned as stable" in capsys.readouterr().out
    promotion.pin_current(repo, ["seizure"])
    assert [e["action"] for e in R.read_history(repo / "seizure")] == ["adopt"]


def test_finish_prints_verdict_and_command_and_exits_1_below_bar(repo, capsys):
    promotion.pin_current(repo, ["seizure"])
    rows = [_new(repo, "2.0", BARS_FAIL)]
    assert promotion.finish(rows, repo, None, promote=False, allow_below_bar=False) == 1
    out = capsys.readouterr().out
    assert "seizure 2.0: REFUSED (against stable 1.0)" in out
    assert f"promote with: dlqr-models --repository {repo} promote seizure 2.0" in out
    assert "below bar: seizure" in out
    assert promotion.finish(rows, repo, None, promote=False, allow_below_bar=True) == 0
    assert R.read(repo / "seizure").stable == "1.0"  # never promoted


def test_finish_promote_runs_the_same_gate(repo, capsys):
    promotion.pin_current(repo, ["seizure"])
    rows = [_new(repo, "2.0", BARS_PASS)]
    # Without data the gate needs --force, which training never passes: refused, nothing changes.
    assert promotion.finish(rows, repo, None, promote=True, allow_below_bar=False) == 1
    assert "the gate refused seizure 2.0" in capsys.readouterr().err
    assert R.read(repo / "seizure").stable == "1.0"


def test_stable_for_without_routing_is_the_greatest_other_version(repo):
    _new(repo, "2.0", BARS_PASS)
    assert promotion.stable_for(repo / "seizure", "2.0") == "1.0"
    R.write(repo / "seizure", R.Routing(stable="2.0"))
    assert promotion.stable_for(repo / "seizure", "3.0") == "2.0"
