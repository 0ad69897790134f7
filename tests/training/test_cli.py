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


def test_book_split_trains_in_a_second_process_by_default_on_any_device():
    """On a GPU too: the two processes share it (no up-front grab, see training.device)."""
    from training.cli import build_parser

    assert build_parser().parse_args(["train", "wine"]).book_workers == 1


# ---------------------------------------------------------------------- newcomer messages


def _run_cli(args, repo_root, blocked=(), env_extra=None, timeout=180):
    """``python -m training ARGS`` in a subprocess where the modules in ``blocked`` cannot be imported."""
    code = (
        "import sys\n"
        f"for m in {list(blocked)!r}: sys.modules[m] = None  # import m -> ModuleNotFoundError\n"
        "from training.cli import main\n"
        f"sys.exit(main({list(args)!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(repo_root), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_without_an_onnx_exporter_train_stops_first_and_names_the_ways_out(tmp_path, repo_root):
    """tf2onnx unimportable: the run fails before it even looks for data, naming --skip-onnx and add-onnx."""
    r = _run_cli(
        ["train", "wine", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "a")],
        repo_root,
        blocked=["tf2onnx"],
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "cannot export model.onnx here: the 'tf2onnx' package is not installed" in r.stderr
    assert "--skip-onnx" in r.stderr and "python -m training add-onnx" in r.stderr
    assert "not found under data dir" not in r.stderr and "Traceback" not in r.stderr
    assert "== wine" not in r.stdout and not (tmp_path / "a").exists()


def test_skip_onnx_lets_the_same_run_start(tmp_path, repo_root):
    """With --skip-onnx the run goes on, here to the (missing) data."""
    r = _run_cli(
        ["train", "wine", "--skip-onnx", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path)],
        repo_root,
        blocked=["tf2onnx"],
    )
    assert r.returncode == 2 and "not found under data dir" in r.stderr, r.stderr[-2000:]


def test_a_serving_only_install_is_told_to_run_make_install(tmp_path, repo_root):
    r = _run_cli(["train", "wine", "--data-dir", str(tmp_path)], repo_root, blocked=["keras", "tensorflow"])
    assert r.returncode == 2
    assert r.stderr.startswith("error: the Python module 'keras' is not installed")
    assert "make install" in r.stderr and "Traceback" not in r.stderr


def test_help_is_plain_text_not_rst(capsys):
    for argv in (["--help"], ["train", "--help"], ["evaluate", "--help"], ["add-onnx", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "``" not in out and ":func:" not in out, argv


def test_train_help_names_skip_onnx_and_the_determinism_switch(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--skip-onnx" in out and "--no-deterministic" in out and "offline" in out


def test_startup_notices_are_dropped_and_the_rest_of_stderr_kept(repo_root):
    """The backend's import-time notices go; anything else written to stderr then stays."""
    code = (
        "import os, sys\n"
        "from training import device\n"
        "class Finder:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'keras':\n"
        "            os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on. blah\\n')\n"
        "            os.write(2, b'a real problem\\n')\n"
        "        return None\n"
        "sys.meta_path.insert(0, Finder())\n"
        "device.import_backend_quietly()\n"
        "print('imported')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    assert r.returncode == 0 and "imported" in r.stdout, r.stderr[-2000:]
    assert "a real problem" in r.stderr and "oneDNN" not in r.stderr
