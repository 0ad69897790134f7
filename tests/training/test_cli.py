"""CLI: help, argument errors, and a full train + evaluate round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from training.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "evaluate", "fetch", "gpu-check"):
        assert cmd in out


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
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "model    epochs" in r.stdout and "wine" in r.stdout
    assert "== device: " in r.stdout  # the device it trained on
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
