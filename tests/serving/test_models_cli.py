"""dlqr-models and the promotion gate on tiny bundles in tmp_path (the real bundles: test_gate_real.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlqr import bundle as B
from dlqr import routing as R
from serving import gate
from serving.models_cli import main
from tests.serving.test_versions import seal_as_version

BARS_PASS = {"accuracy": {"bar": 0.8, "op": ">=", "value": 0.9, "passed": True}}
BARS_FAIL = {"accuracy": {"bar": 0.95, "op": ">=", "value": 0.9, "passed": True}}  # recorded verdict is wrong


def _with_metrics(model_dir: Path, version: str, test: dict, bars: dict) -> None:
    """Re-seal one version with the given test figures and quality bars (same network)."""
    from tests.serving.bundles import reseal

    def mutate(staging: Path) -> None:
        m = json.loads((staging / B.METRICS).read_text())
        m["test"].update(test)
        m["quality_bars"] = bars
        (staging / B.METRICS).write_text(json.dumps(m))

    reseal(model_dir / version, mutate)


@pytest.fixture
def repo(artifacts, tmp_path) -> Path:
    """artifacts/seizure/{1.0,1.1,2.0}: 1.0 stable-to-be, 1.1 as good, 2.0 worse by the recorded figures."""
    root = tmp_path / "repo"
    mdir = root / "seizure"
    mdir.mkdir(parents=True)
    for v in ("1.0", "1.1", "2.0"):
        seal_as_version(artifacts / "seizure", mdir, v)
    _with_metrics(mdir, "1.0", {"roc_auc": 0.95, "accuracy": 0.9, "f1": 0.8}, BARS_PASS)
    _with_metrics(mdir, "1.1", {"roc_auc": 0.951, "accuracy": 0.9, "f1": 0.8}, BARS_PASS)
    _with_metrics(mdir, "2.0", {"roc_auc": 0.90, "accuracy": 0.9, "f1": 0.8}, BARS_PASS)
    return root


def run(repo: Path, *argv: str) -> int:
    return main(["--repository", str(repo), *argv])


def snapshot(mdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in mdir.iterdir() if p.is_file() and p.name != R.LOCK_FILE}


# ---------------------------------------------------------------------- gate units


def test_bars_are_recomputed_not_trusted():
    assert gate.check_bars({"quality_bars": BARS_PASS}).ok
    check = gate.check_bars({"quality_bars": BARS_FAIL})
    assert not check.ok and "accuracy 0.9 (needs >= 0.95)" in check.detail
    assert not gate.check_bars({}).ok


def test_compare_metrics_uses_direction_and_the_cards_tolerance():
    # seizure card: roc_auc tolerance 0.002; wine: mae (lower is better) tolerance 0.005
    assert gate.compare_metrics("seizure", {"roc_auc": 0.949}, {"roc_auc": 0.95}, ("roc_auc",))[0]
    assert not gate.compare_metrics("seizure", {"roc_auc": 0.947}, {"roc_auc": 0.95}, ("roc_auc",))[0]
    assert gate.compare_metrics("wine", {"mae": 0.204}, {"mae": 0.2}, ("mae",))[0]
    assert not gate.compare_metrics("wine", {"mae": 0.21}, {"mae": 0.2}, ("mae",))[0]
    missing = gate.compare_metrics("seizure", {}, {"f1": 0.9}, ("f1",))
    assert not missing[0] and missing[2] == ["f1 is not recorded for both versions"]
    assert gate.worse_by("mae", 0.1, 0.2) < 0 < gate.worse_by("accuracy", 0.1, 0.2)


def test_common_test_ids_keep_only_rows_in_both_splits(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, ids in ((a, ["x", "y", "z"]), (b, ["z", "y", "w"])):
        d.mkdir()
        (d / B.TEST_SPLIT).write_text(json.dumps({"test_ids": ids}))
    assert gate.common_test_ids(a, b) == ["y", "z"]


@pytest.mark.parametrize("defect", ["sha", "golden"])
def test_gate_refuses_a_broken_bundle(repo, defect):
    mdir = repo / "seizure"
    seal_as_version(mdir / "1.1", mdir, "3.0", defect=defect)
    verdict = gate.run("seizure", mdir / "3.0", mdir / "1.0", None)
    assert not verdict.ok
    assert verdict.checks[0].name == "verify" and not verdict.checks[0].ok
    assert ("sha256 mismatch" if defect == "sha" else "golden pair 0 mismatch") in verdict.checks[0].detail


def test_gate_refuses_a_bundle_without_onnx(repo):
    from tests.serving.bundles import reseal

    mdir = repo / "seizure"
    reseal(mdir / "1.1", lambda staging: (staging / B.ONNX_FILE).unlink())
    verdict = gate.run("seizure", mdir / "1.1", mdir / "1.0", None)
    assert not verdict.checks[0].ok and "no model.onnx" in verdict.checks[0].detail


def test_without_data_the_recorded_figures_decide_and_force_is_needed(repo):
    mdir = repo / "seizure"
    good = gate.run("seizure", mdir / "1.1", mdir / "1.0", None)
    assert all(c.ok for c in good.checks) and good.needs_force and not good.ok
    assert "recorded test figures only (no data directory" in good.checks[-1].detail
    worse = gate.run("seizure", mdir / "2.0", mdir / "1.0", None)
    assert not worse.checks[-1].ok and "roc_auc 0.9 vs stable 0.95" in worse.checks[-1].detail


# ---------------------------------------------------------------------- CLI


def test_list_show_diff(repo, capsys):
    assert run(repo, "list", "seizure") == 0
    out = capsys.readouterr().out
    assert "no routing file" in out and "2.0" in out and "served (no routing file: greatest version)" in out
    assert run(repo, "show", "seizure", "1.0") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "1.0" and shown["bars"] == "pass" and shown["test"]["roc_auc"] == 0.95
    assert run(repo, "diff", "seizure", "1.0", "2.0") == 0
    assert any(
        line.split()[:1] == ["roc_auc"] and "-0.05" in line for line in capsys.readouterr().out.splitlines()
    )


def test_promote_canary_shadow_rollback_and_history(repo, capsys):
    mdir = repo / "seizure"
    # No routing file: the greatest version (2.0) serves; promoting 1.0 needs --force without data.
    assert run(repo, "promote", "seizure", "1.0") == 1
    assert not (mdir / R.ROUTING_FILE).exists()
    assert run(repo, "promote", "seizure", "1.0", "--force", "--reason", "pin the known good one") == 0
    assert R.read(mdir) == R.Routing(stable="1.0", previous_stable="2.0")
    assert (
        run(repo, "canary", "seizure", "1.1", "--percent", "10", "--force", "--reason", "no data here") == 0
    )
    assert run(repo, "shadow", "seizure", "2.0", "--percent", "100") == 0
    r = R.read(mdir)
    assert (r.canary.version, r.canary.percent, r.shadow.version) == ("1.1", 10, "2.0")
    assert run(repo, "clear-canary", "seizure") == 0
    assert run(repo, "clear-shadow", "seizure") == 0
    assert R.read(mdir) == R.Routing(stable="1.0", previous_stable="2.0")
    assert run(repo, "rollback", "seizure", "--reason", "test") == 0
    assert R.read(mdir) == R.Routing(stable="2.0")
    history = R.read_history(mdir)
    assert [e["action"] for e in history] == ["promote", "canary", "shadow", "clear-canary", "clear-shadow",
                                              "rollback"]  # fmt: skip
    first = history[0]
    assert first["forced"] is True and first["reason"] == "pin the known good one"
    assert first["from"] is None and first["to"] == {"stable": "1.0", "previous_stable": "2.0"}
    assert {c["name"] for c in first["evidence"]["checks"]} == {"verify", "bars", "vs-stable"}
    assert first["user"] and first["time"].endswith("Z")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["promote", "seizure", "9.9"], "seizure has no version '9.9' (versions: 2.0, 1.1, 1.0)"),
        (["canary", "seizure", "9.9", "--percent", "5"], "has no version '9.9'"),
        (["canary", "seizure", "1.1", "--percent", "150"], "150 is not a percent in (0, 100]"),
        (["canary", "seizure", "1.1", "--percent", "-1"], "-1 is not a percent in (0, 100]"),
        (["shadow", "seizure", "1.1", "--percent", "0"], "0 is not a percent in (0, 100]"),
        (["canary", "seizure", "1.0", "--percent", "5"], "canary 1.0 is the stable version of seizure"),
        (["shadow", "seizure", "1.0", "--percent", "5"], "shadow 1.0 is the stable version of seizure"),
        (["promote", "seizure", "1.1", "--force"], "--force needs --reason"),
        (["promote", "nosuch", "1.1"], "unknown model 'nosuch'"),
        (["clear-canary", "seizure"], "seizure has no canary"),
        (["rollback", "seizure"], "no previous stable version"),
        (["promote", "seizure", "2.0"], "the gate refused seizure 2.0"),
    ],
)
def test_bad_input_is_refused_clearly_and_changes_nothing(repo, capsys, argv, message):
    mdir = repo / "seizure"
    R.write(mdir, R.Routing(stable="1.0"))
    before = snapshot(mdir)
    try:
        code = run(repo, *argv)
    except SystemExit as exc:  # argparse's own refusals (a percent out of range) exit 2
        code = exc.code
    assert code != 0
    assert message in capsys.readouterr().err
    assert snapshot(mdir) == before


def test_a_second_writer_gets_a_clear_error_and_changes_nothing(repo, capsys):
    mdir = repo / "seizure"
    R.write(mdir, R.Routing(stable="1.0"))
    before = snapshot(mdir)
    held = R.writer_lock(mdir)
    held.__enter__()
    try:
        assert run(repo, "shadow", "seizure", "1.1", "--percent", "5") == 3
    finally:
        held.__exit__(None, None, None)
    assert "another command is changing the routing of seizure" in capsys.readouterr().err
    assert snapshot(mdir) == before
    assert run(repo, "shadow", "seizure", "1.1", "--percent", "5") == 0  # lock released


def test_a_malformed_routing_file_is_named_and_left_alone(repo, capsys):
    mdir = repo / "seizure"
    (mdir / R.ROUTING_FILE).write_text('{"stable": "1.0", "canary": {"version": "1.1", "percent": 900}}')
    before = snapshot(mdir)
    assert run(repo, "shadow", "seizure", "1.1", "--percent", "5") == 2
    assert "routing.json: canary.percent" in capsys.readouterr().err
    assert snapshot(mdir) == before


def test_python_dash_m_serving_models(repo):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    proc = subprocess.run([sys.executable, "-m", "serving", "models", "--repository", str(repo), "list",
                           "seizure"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "1.1" in proc.stdout


def test_repository_must_exist(tmp_path, capsys):
    assert main(["--repository", str(tmp_path / "none"), "list"]) == 2
    assert "is not a directory" in capsys.readouterr().err
