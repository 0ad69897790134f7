"""``python -m training train`` (``make train``) writes a new version directory of the model repository."""

from __future__ import annotations

import json
import shutil

import pytest

from dlqr import repository


@pytest.mark.slow
def test_train_adds_a_version_directory_and_migrates_a_flat_bundle(tmp_path, real_data_dir, repo_root):
    from training.cli import main

    art = tmp_path / "art"
    flat_src = repository.latest_dir(repo_root / "artifacts" / "wine")
    shutil.copytree(flat_src, art / "wine")  # a flat bundle from before versioning
    flat_version = json.loads((art / "wine" / "manifest.json").read_text())["version"]
    common = ["--epochs", "1", "--max-rows", "200", "-q", "--allow-below-bar", "--data-dir", str(real_data_dir), "--out", str(art),
              "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    assert main(["train", "wine", "--version", "3000.01.01.000000", *common]) == 0
    assert sorted(p.name for p in (art / "wine").iterdir() if p.is_dir()) == [
        flat_version,
        "3000.01.01.000000",
    ]
    for v in (flat_version, "3000.01.01.000000"):
        assert json.loads((art / "wine" / v / "manifest.json").read_text())["version"] == v
    assert repository.latest_dir(art / "wine") == art / "wine" / "3000.01.01.000000"
    # Versions are immutable: the same --version again is refused (before training), nothing left behind.
    assert main(["train", "wine", "--version", "3000.01.01.000000", *common]) == 2
    assert not [p for p in (art / "wine").iterdir() if p.name.startswith(".") and p.is_dir()]
