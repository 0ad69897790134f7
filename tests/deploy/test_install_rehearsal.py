"""Install rehearsal: Dockerfile.serve's build replayed without Docker, then its CMD served.

The fixtures (tests/deploy/conftest.py, rehearsal.py) install the package into
a fresh venv with the Dockerfile's own RUN step and the files its COPYs would
put in the image, then start the image's CMD with its ENV as its USER. These
tests check what a user of the container would: readiness, one correct
prediction per model (the bundles' golden pairs), the probes, the
HEALTHCHECK command, and a bundle directory mounted at run time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dlqr import repository
from dlqr.card import get as get_card
from dlqr.card import names as _model_names
from tests.conftest import REPO_ROOT
from tests.deploy.conftest import (
    RunningServer,
    free_port,
    http,
    start_image,
    stop_process_group,
    wait_until_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]
MODEL_NAMES = _model_names()


def _artifacts_dir(server: RunningServer) -> Path:
    return Path(server.env["DLQR_ARTIFACTS_DIR"])


def _bundle(artifacts: Path, model: str) -> Path:
    """The served bundle of a model: its greatest version directory (or a flat bundle)."""
    return repository.latest_dir(artifacts / model) or artifacts / model


def _manifest(artifacts: Path, model: str) -> dict:
    return json.loads((_bundle(artifacts, model) / "manifest.json").read_text())


def _assert_prediction_matches(model: str, got: dict, want: dict, prep: dict) -> None:
    """Served prediction == the bundle's golden prediction (training computed it with Keras)."""
    problem = get_card(model).task.compare(got, want, prep)
    assert problem is None, (model, problem, got, want)


def test_readyz_is_200_with_all_bundles(serving_container: RunningServer):
    status, headers, body = http("GET", f"{serving_container.base_url}/readyz")
    assert status == 200, body
    assert headers.get("X-Request-ID")


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_one_prediction_per_model_matches_the_bundle(serving_container: RunningServer, model: str):
    manifest = _manifest(_artifacts_dir(serving_container), model)
    golden = manifest["golden"]
    assert golden, f"{model}: the bundle has no golden pairs to check against"
    status, _, body = http(
        "POST", f"{serving_container.base_url}/predict/{model}", {"instances": [g["input"] for g in golden]}
    )
    assert status == 200, body[:2000]
    doc = json.loads(body)
    assert doc["model"] == model
    assert doc["version"] == manifest["version"]
    assert len(doc["predictions"]) == len(golden)
    prep = json.loads((_bundle(_artifacts_dir(serving_container), model) / "preprocessing.json").read_text())
    for got, g in zip(doc["predictions"], golden, strict=True):
        _assert_prediction_matches(model, got, g["prediction"], prep)


def test_server_runs_as_the_image_user_from_the_installed_wheel(serving_container: RunningServer):
    image = serving_container.image
    # The master and its workers all run with the image's uid (we are root in CI).
    pids = [serving_container.proc.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == serving_container.proc.pid:
            pids.append(int(stat.parent.name))
    assert len(pids) >= 2, "no Gunicorn worker processes found"
    expected_uid = image.uid if os.geteuid() == 0 else os.geteuid()
    for pid in pids:
        uids = [
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
        ]
        assert uids and all(int(u) == expected_uid for u in uids[0].split()[1:]), (pid, uids)
    assert expected_uid != 0
    # /app has only the Gunicorn config, not the package: the code comes from the venv's wheel.
    app_files = sorted(
        p.relative_to(image.host_path(image.workdir)).as_posix()
        for p in image.host_path(image.workdir + "/serving").rglob("*")
    )
    assert app_files == ["serving/gunicorn.conf.py"]
    # No installer or build tree left behind.
    venv_python = image.host_path("/opt/venv/bin/python")
    assert subprocess.run([str(venv_python), "-c", "import pip"], capture_output=True).returncode != 0
    assert not image.host_path("/src").exists()


def test_serving_install_has_onnxruntime_and_no_tensorflow_or_keras(serving_container: RunningServer):
    """The image's install step installs the serving set only: ONNX Runtime, not TensorFlow or Keras."""
    venv_python = str(serving_container.image.host_path("/opt/venv/bin/python"))
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('onnxruntime', 'flask', 'gunicorn', 'pydantic_settings', 'tensorflow', 'keras', 'h5py', 'tf2onnx')}))"
    )
    out = subprocess.run([venv_python, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found == {
        "onnxruntime": True, "flask": True, "gunicorn": True, "pydantic_settings": True,
        "tensorflow": False, "keras": False, "h5py": False, "tf2onnx": False,
    }  # fmt: skip


def test_probes_and_healthcheck_command(serving_container: RunningServer):
    image = serving_container.image
    deployment = next(d for d in yaml.safe_load_all((REPO_ROOT / "deploy/k8s/deployment.yaml").read_text()))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    paths = {container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    for path in sorted(paths):
        status, _, body = http("GET", serving_container.base_url + path)
        assert status == 200, (path, body)
    # The image's HEALTHCHECK, run the way Docker runs it: inside the container, as its user.
    assert image.healthcheck, "Dockerfile.serve has no HEALTHCHECK"
    ok = subprocess.run(
        [*image.user_prefix(), *image.healthcheck],
        env=serving_container.env,
        cwd=image.host_path(image.workdir),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    # ...and it fails when nothing answers on the configured port.
    env = dict(serving_container.env, DLQR_BIND=f"0.0.0.0:{free_port()}")
    bad = subprocess.run(
        [*image.user_prefix(), *image.healthcheck],
        env=env,
        cwd=image.host_path(image.workdir),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0
    assert "/readyz" in bad.stderr


def test_bundles_mounted_at_run_time_replace_the_baked_ones(
    serving_container: RunningServer, rehearsal_root: Path
):
    """DLQR_ARTIFACTS_DIR pointing at another directory (a volume) serves that directory's bundles."""
    image = serving_container.image
    mounted = rehearsal_root / "mounted-models"
    # A volume in the flat layout (one bundle per model folder, still accepted as one version).
    for model in MODEL_NAMES:
        shutil.copytree(_bundle(_artifacts_dir(serving_container), model), mounted / model)
    # A "new model version": same weights, another version string. The manifest
    # is the one file a bundle does not hash, so the bundle still verifies.
    for model in MODEL_NAMES:
        mpath = mounted / model / "manifest.json"
        manifest = json.loads(mpath.read_text())
        manifest["version"] = f"mounted-{model}-v2"
        mpath.write_text(json.dumps(manifest))
    for p in [mounted, *mounted.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)  # a read-only volume, readable by the image's user
    port = free_port()
    multiproc = rehearsal_root / "multiproc-mounted"
    multiproc.mkdir()
    if os.geteuid() == 0:
        os.chown(multiproc, image.uid, image.gid)
    env = dict(
        serving_container.env,
        DLQR_BIND=f"127.0.0.1:{port}",
        DLQR_ARTIFACTS_DIR=str(mounted),
        DLQR_WORKERS="1",
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
    )
    log_path = rehearsal_root / "server-mounted.log"
    proc = start_image(image, env, log_path)
    try:
        wait_until_ready(proc, f"http://127.0.0.1:{port}", log_path)
        for model in MODEL_NAMES:
            golden = json.loads((mounted / model / "manifest.json").read_text())["golden"][:1]
            status, _, body = http(
                "POST",
                f"http://127.0.0.1:{port}/predict/{model}",
                {"instances": [g["input"] for g in golden]},
            )
            assert status == 200, body[:2000]
            assert json.loads(body)["version"] == f"mounted-{model}-v2"
    finally:
        stop_process_group(proc)
