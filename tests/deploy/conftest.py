"""Fixtures for the deployment tests: the rehearsed serving image and its running server.

Both are session-scoped: the install (a fresh serving-only venv: ONNX Runtime) is the
expensive part, and the Prometheus test scrapes the same server the rehearsal
test checks. Every process started here is killed by a finalizer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from dlqr.card import names as _model_names
from tests.conftest import REPO_ROOT
from tests.deploy import dockerfile as D
from tests.deploy import rehearsal as R

MODEL_NAMES = _model_names()

READY_TIMEOUT_S = 240


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: object | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:
    """One HTTP request on loopback; returns (status, headers, body) without raising on 4xx/5xx."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def stop_process_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def all_workers_ready(base_url: str) -> bool:
    """/readyz is 200 *and* every model's ``dlqr_model_ready`` (the minimum over live workers) is 1.

    /readyz answers for the one worker that took the request; each worker loads
    the models itself, so a single 200 does not mean the others are done.
    """
    if http("GET", f"{base_url}/readyz", timeout=5)[0] != 200:
        return False
    status, _, body = http("GET", f"{base_url}/metrics", timeout=5)
    if status != 200:
        return False
    ready = {}
    for line in body.decode().splitlines():
        m = re.fullmatch(r'dlqr_model_ready\{model="(\w+)"\} (\S+)', line.strip())
        if m:
            ready[m.group(1)] = float(m.group(2))
    return set(ready) == set(MODEL_NAMES) and all(v == 1.0 for v in ready.values())


@dataclass
class RunningServer:
    image: R.Image
    proc: subprocess.Popen
    port: int
    log_path: Path
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 60) -> str:
        return _tail(self.log_path, n)


@pytest.fixture(scope="session")
def rehearsal_root():
    # Not pytest's tmp_path: its parents are mode 0700, which the image's
    # unprivileged user could not traverse.
    root = Path(tempfile.mkdtemp(prefix="dlqr-rehearsal-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def serving_image(rehearsal_root: Path) -> R.Image:
    """Dockerfile.serve replayed into a temporary root (fresh venv, the Dockerfile's own install step)."""
    df = D.parse(REPO_ROOT / "Dockerfile.serve")
    runtime = df.final
    user = runtime.user or "0"
    uid = int(user.split(":")[0]) if user.split(":")[0].isdigit() else 0
    gid = int(user.split(":")[1]) if ":" in user and user.split(":")[1].isdigit() else uid
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.fail("tests run as root but setpriv is missing: cannot run the server as the image's USER")
    version = R.python_version_of(df.stages[0].base)
    python = R.find_interpreter(version, uid, gid)
    if python is None:
        pytest.skip(
            f"no Python {version} with venv/ensurepip that uid {uid} can run "
            f"(Debian: apt-get install python{version}-venv)"
        )
    return R.build_serving_image(REPO_ROOT, rehearsal_root / "rootfs", python, rehearsal_root / "install.log")


def start_image(image: R.Image, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Run the image's CMD as its USER in its WORKDIR, in a new process group (for cleanup)."""
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*image.user_prefix(), *image.cmd],
            cwd=image.host_path(image.workdir),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until_ready(
    proc: subprocess.Popen, base_url: str, log_path: Path, timeout: float = READY_TIMEOUT_S
) -> None:
    """Poll until every worker is ready; fail with the server log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} before ready:\n{_tail(log_path)}")
        try:
            if all_workers_ready(base_url):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"not ready after {timeout:.0f}s:\n{_tail(log_path)}")
        time.sleep(0.5)


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def serving_container(serving_image: R.Image, rehearsal_root: Path):
    """The image's CMD, as its USER, with its ENV (bind moved to a free loopback port); ready."""
    port = free_port()
    env = serving_image.process_env({"DLQR_BIND": f"127.0.0.1:{port}"})
    log_path = rehearsal_root / "server.log"
    proc = start_image(serving_image, env, log_path)
    try:
        wait_until_ready(proc, f"http://127.0.0.1:{port}", log_path)
        yield RunningServer(serving_image, proc, port, log_path, env)
    finally:
        stop_process_group(proc)
