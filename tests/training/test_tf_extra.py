"""`make install` picks the TensorFlow extra: GPU detection with a fake nvidia-smi on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "tf_extra.sh"

NVIDIA_SMI_OK = """#!/bin/sh
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-1111-2222-3333-444444444444)"
"""
NVIDIA_SMI_NO_DRIVER = """#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
exit 9
"""


def _bin_dir(tmp_path: Path, nvidia_smi: str | None) -> Path:
    """A PATH directory with grep (the script needs it) and, optionally, a fake nvidia-smi."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "grep").symlink_to(shutil.which("grep"))
    if nvidia_smi is not None:
        fake = d / "nvidia-smi"
        fake.write_text(nvidia_smi)
        fake.chmod(0o755)
    return d


def _detect(bin_dir: Path, tf: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": str(bin_dir)}
    if tf is not None:
        env["TF"] = tf
    return subprocess.run(["/bin/sh", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("nvidia_smi", "tf", "expected"),
    [
        (NVIDIA_SMI_OK, None, "gpu"),  # a GPU is listed: CUDA build
        (NVIDIA_SMI_OK, "auto", "gpu"),
        (NVIDIA_SMI_NO_DRIVER, None, "cpu"),  # nvidia-smi present but failing (no driver)
        (None, None, "cpu"),  # no nvidia-smi at all
        (NVIDIA_SMI_OK, "cpu", "cpu"),  # explicit override wins over detection...
        (None, "gpu", "gpu"),  # ...both ways
    ],
)
def test_detection(tmp_path, nvidia_smi, tf, expected):
    res = _detect(_bin_dir(tmp_path, nvidia_smi), tf)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == expected


def test_nvidia_smi_listing_no_gpu_means_cpu(tmp_path):
    res = _detect(_bin_dir(tmp_path, "#!/bin/sh\necho 'No devices were found'\n"))
    assert res.stdout.strip() == "cpu"


def test_bad_choice_is_an_error(tmp_path):
    res = _detect(_bin_dir(tmp_path, None), "cuda")
    assert res.returncode == 2
    assert "TF must be gpu, cpu or auto" in res.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    ("nvidia_smi", "tf", "extra"), [(NVIDIA_SMI_OK, None, "gpu"), (NVIDIA_SMI_OK, "cpu", "cpu")]
)
def test_make_install_uses_the_detected_extra(tmp_path, nvidia_smi, tf, extra):
    """`make -n install` (dry run, into a scratch venv path) installs ".[<extra>,train,dev]"."""
    bin_dir = _bin_dir(tmp_path, nvidia_smi)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    args = ["make", "-n", "install", f"VENV={tmp_path / 'venv'}"] + ([f"TF={tf}"] if tf else [])
    res = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True)
    assert f'-e ".[{extra},train,dev]"' in res.stdout
    other = "tensorflow-cpu" if extra == "gpu" else "tensorflow "
    assert f"uninstall --quiet --yes {other}" in res.stdout.replace("\n", " ")
