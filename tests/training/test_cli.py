"""CLI: help, argument errors, and a full train + evaluate round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dlqr import bundle as B
from tests.serving import bundles
from training.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "evaluate", "fetch", "gpu-check", "add-onnx"):
        assert cmd in out


def test_model_choices_come_from_the_registered_cards(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "{wine,seizure,digit,all}" in capsys.readouterr().out


def test_unknown_model_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "cat"])
    assert e.value.code == 2
    assert "invalid choice: 'cat'" in capsys.readouterr().err


def test_bad_option_values_are_clear(capsys, tmp_path):
    assert main(["train", "wine", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "--epochs must be positive" in capsys.readouterr().err
    assert main(["train", "all", "--config", str(tmp_path / "x.toml")]) == 2
    assert "single model" in capsys.readouterr().err
    assert main(["train", "wine", "--data-dir", str(tmp_path), "--out", str(tmp_path / "a")]) == 2
    assert "not found under data dir" in capsys.readouterr().err


def test_require_gpu_fails_fast_without_gpu(monkeypatch, capsys, tmp_path):
    from training import device

    if device.visible_gpus():
        pytest.skip("a GPU is visible here")
    monkeypatch.setenv("DLQR_REQUIRE_GPU", "1")
    # No data dir exists: the GPU check must stop the run before any data is looked for.
    assert main(["train", "wine", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "DLQR_REQUIRE_GPU=1 but the" in err and "sees no GPU" in err
    assert "not found under data dir" not in err


@pytest.mark.parametrize(
    ("value", "required"), [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)]
)
def test_gpu_required_parsing(value, required):
    from training import device

    assert device.gpu_required({"DLQR_REQUIRE_GPU": value}) is required
    assert device.gpu_required({}) is False


@pytest.mark.slow
def test_train_then_evaluate_subprocess(tmp_path, real_data_dir, repo_root):
    env_cmd = [sys.executable, "-m", "training"]
    r = subprocess.run(
        [
            *env_cmd,
            "train",
            "wine",
            "--epochs",
            "2",
            "--max-rows",
            "300",
            "-q",
            "--data-dir",
            str(real_data_dir),
            "--out",
            str(tmp_path / "art"),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--allow-below-bar",  # two epochs on 300 rows miss the bars: the run still exits 0
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "model    epochs" in r.stdout and "wine" in r.stdout
    assert "phase seconds" in r.stdout and "book_fit" in r.stdout  # where the time went
    assert "== device: " in r.stdout  # the device it trained on
    assert "promotion gate" in r.stdout and "promote with: dlqr-models" in r.stdout
    # TensorFlow's start-up chatter is silenced by default (shown with -v).
    for chatter in ("NodeDef mentions attribute", "absl::InitializeLog", "oneDNN custom operations"):
        assert chatter not in r.stderr and chatter not in r.stdout, chatter
    r = subprocess.run(
        [
            *env_cmd,
            "evaluate",
            "wine",
            "--artifacts",
            str(tmp_path / "art"),
            "--data-dir",
            str(real_data_dir),
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["matches_bundle"] is True and res["n_test"] == 300


# ---------------------------------------------------------------------- add-onnx


def _sealed_without_onnx(dest, name, version="2026.03.04.050607"):
    """A bundle as trained where ONNX export was impossible: resealed without model.onnx."""
    bundles.write_bundle(dest, name, version=version)
    return bundles.reseal(dest, lambda d: (d / "model.onnx").unlink(), lambda m: m.pop("onnx"))


def _serves(artifacts, name, golden):
    from serving.app import create_app

    app = create_app({"ARTIFACTS_DIR": artifacts, "MODEL_LOADING": "sync", "MODELS": [name]})
    state = app.extensions["dlqr"].registry.states[name]
    assert state.ready, state.reason
    r = app.test_client().post(f"/predict/{name}", json={"instances": [g["input"] for g in golden]})
    assert r.status_code == 200, r.data
    return r.get_json()["predictions"]


def test_add_onnx_makes_a_bundle_without_it_serve(tmp_path, capsys):
    from serving.app import create_app

    art = tmp_path / "artifacts"
    dest = _sealed_without_onnx(art / "digit", "digit")
    before = B.load_bundle(dest, "digit").manifest
    app = create_app({"ARTIFACTS_DIR": art, "MODEL_LOADING": "sync", "MODELS": ["digit"]})
    assert "add-onnx" in app.extensions["dlqr"].registry.states["digit"].reason  # not ready yet

    assert main(["add-onnx", str(dest), "--golden-only"]) == 0
    out = capsys.readouterr().out
    assert f"ok  digit {before['version']}: model.onnx added" in out and "on 4 rows" in out
    after = B.load_bundle(dest, "digit").manifest  # verifies: every hash matches, model.onnx included
    assert after["version"] == before["version"] and after["golden"] == before["golden"]
    assert after["files"]["model.onnx"] == B.sha256_file(dest / "model.onnx")
    assert after["onnx"]["rows_checked"] == 4 and after["onnx"]["max_abs_diff_vs_keras"] <= 1e-5
    preds = _serves(art, "digit", after["golden"])
    assert [p["digit"] for p in preds] == [g["prediction"]["digit"] for g in after["golden"]]


def test_add_onnx_checks_the_recorded_test_rows_of_the_real_data(tmp_path, real_data_dir, capsys):
    art = tmp_path / "artifacts"
    dest = _sealed_without_onnx(art / "wine", "wine")  # test_split.json records rows 0..4
    assert main(["add-onnx", str(dest), "--data-dir", str(real_data_dir)]) == 0
    assert "on 9 rows" in capsys.readouterr().out  # 4 golden pairs + 5 recorded test rows
    manifest = B.load_bundle(dest, "wine").manifest
    assert manifest["onnx"]["rows_checked"] == 9 and manifest["version"] == "2026.03.04.050607"
    _serves(art, "wine", manifest["golden"])


def test_add_onnx_errors_are_one_line(tmp_path, capsys):
    assert main(["add-onnx", str(tmp_path / "nope"), "--golden-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bundle directory") and "Traceback" not in err
    dest = _sealed_without_onnx(tmp_path / "artifacts" / "wine", "wine")
    (dest / "metrics.json").write_text("{}")  # tampered: refuse to re-seal it
    assert main(["add-onnx", str(dest), "--golden-only"]) == 2
    assert "sha256 mismatch for metrics.json" in capsys.readouterr().err
    assert not (dest / "model.onnx").exists()


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (4, 1), (8, 2), (16, 4), (64, 4)])
def test_baseline_workers_default_leaves_small_machines_inline(monkeypatch, cores, workers):
    from training import cli

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert cli.default_baseline_workers() == workers


@pytest.mark.parametrize(("gpus", "workers"), [([], 1), (["/physical_device:GPU:0"], 0)])
def test_book_workers_default_is_a_second_process_on_a_cpu_only(gpus, workers):
    from training import cli

    assert cli.default_book_workers(gpus) == workers


def test_book_workers_default_falls_back_to_inline_when_the_backend_cannot_say(monkeypatch):
    from training import cli, device

    def broken() -> list[str]:
        raise RuntimeError("no backend")

    monkeypatch.setattr(device, "visible_gpus", broken)
    assert cli.default_book_workers() == 0
