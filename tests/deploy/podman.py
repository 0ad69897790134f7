"""Podman helpers for the container tests (tests/deploy/test_container.py).

Everything here shells out to Debian's podman (scripts/install_podman.sh installs it and
sets this CI machine's two host settings). Every call has a timeout; every name the tests
create carries a per-session id, so two test sessions on one machine never share a
container, pod, network, volume or image tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

BASE_IMAGE = os.environ.get("DLQR_BASE_IMAGE", "localhost/dlqr-pybase:bookworm")
BASE_SCRIPT = REPO_ROOT / "scripts" / "container-base.sh"
INSTALL_HINT = "as root on Debian: scripts/install_podman.sh"
SESSION_ID = f"{os.getpid()}-{secrets.token_hex(3)}"


class PodmanError(AssertionError):
    pass


def run(
    *args: str, timeout: float = 120, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``podman ARGS``; raises PodmanError with podman's output when it fails and ``check``."""
    return command(["podman", *args], timeout=timeout, check=check, cwd=cwd)


def command(
    argv: list[str], timeout: float = 120, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise PodmanError(
            f"{' '.join(argv)}: no answer after {timeout:.0f}s\n{exc.stdout}\n{exc.stderr}"
        ) from exc
    if check and res.returncode != 0:
        raise PodmanError(
            f"{' '.join(argv)} exited {res.returncode}:\n{tail(res.stdout)}\n{tail(res.stderr)}"
        )
    return res


def tail(text: str | bytes | None, n: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [
        line
        for line in (text or "").splitlines()
        # podman 4.3 without systemd logs this for every container with a HEALTHCHECK: the
        # periodic timer cannot be set up; `podman healthcheck run` works without it.
        if "unable to get systemd connection" not in line
    ]
    return "\n".join(lines[-n:])


def require_podman() -> None:
    """Skip (with the reason) unless podman is installed and can run a container here."""
    if shutil.which("podman") is None:
        pytest.skip(f"podman is not installed ({INSTALL_HINT})")
    if os.geteuid() != 0:
        # Rootless podman needs subuid ranges, and the memory figures read other users' /proc.
        pytest.skip("the container tests run rootful podman: run them as root, as CI does")
    info = run("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60, check=False)
    if info.returncode != 0:
        pytest.skip(f"podman cannot start here ({INSTALL_HINT}): {tail(info.stderr, 5)}")


def ensure_base_image() -> str:
    """The local stand-in for python:3.11-slim-bookworm, built by scripts/container-base.sh if missing.

    The script is idempotent (seconds when the image is current). A failing build is a
    failure, not a skip: the script is part of the project.
    """
    exists = run("image", "exists", BASE_IMAGE, check=False).returncode == 0
    if not exists and shutil.which("mmdebstrap") is None:
        pytest.skip(f"no {BASE_IMAGE} and no mmdebstrap to build it ({INSTALL_HINT})")
    if shutil.which("mmdebstrap") is not None:
        command(["sh", str(BASE_SCRIPT)], timeout=900, cwd=REPO_ROOT)
    smoke = run("run", "--rm", "--network", "host", BASE_IMAGE, "python3", "-c", "print(1)", check=False)
    if smoke.returncode != 0 or smoke.stdout.strip() != "1":
        pytest.skip(
            f"podman cannot run a container on this machine ({INSTALL_HINT} sets "
            f"default_ulimits = [] and runtime runc): {tail(smoke.stderr, 5)}"
        )
    return BASE_IMAGE


def build(
    containerfile: Path, tag: str, context: Path, build_args: dict[str, str], timeout: float = 1200
) -> float:
    """``podman build`` (Docker format, so HEALTHCHECK is kept); returns the wall time in seconds.

    Never pulls: the base must be local. ``--layers=false``: one commit per stage, and no
    intermediate images left behind (a new set per source change would pile up on a CI
    machine; pip's cache mount is what a rebuild reuses). The host's CA store is mounted read-only into the RUN
    steps (not into any layer): where HTTPS to the package index goes through a proxy, only
    the host trusts that proxy's CA, and pip in the build needs it too.
    """
    args = ["build", "--format", "docker", "--layers=false", "--network", "host", "--pull=never"]
    args += ["-f", str(containerfile)]
    if Path("/etc/ssl/certs").is_dir():
        args += ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    t0 = time.monotonic()
    run(*args, "-t", tag, str(context), timeout=timeout)
    return time.monotonic() - t0


def build_cached(
    containerfile: Path, tag: str, base: str, context: Path | None = None, timeout: float = 600
) -> None:
    """Build a stand-in image FROM ``base`` (build argument BASE_IMAGE) unless it is current.

    Current: built from this Containerfile's text, the files of ``context`` when one is given
    (what its COPYs read; else the Containerfile's folder, not hashed) and this base, all
    recorded in a label, so a stand-in is built once per machine and rebuilt when any changes.
    """
    base_id = run("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
    digest = hashlib.sha256(containerfile.read_bytes())
    if context is not None:
        for path in sorted(p for p in context.rglob("*") if p.is_file()):
            digest.update(path.relative_to(context).as_posix().encode() + b"\0" + path.read_bytes())
    recipe = digest.hexdigest()[:16] + "-" + base_id[:16]
    have = run("image", "inspect", "--format", '{{.Id}} {{ index .Labels "dlqr.recipe" }}', tag, check=False)
    old_id, _, old_recipe = have.stdout.strip().partition(" ")
    if have.returncode == 0 and old_recipe == recipe:
        return
    run(
        "build", "--format", "docker", "--network", "host", "--pull=never", "--layers=false",
        "--build-arg", f"BASE_IMAGE={base}", "--label", f"dlqr.recipe={recipe}",
        "-f", str(containerfile), "-t", tag, str(context or containerfile.parent),
        timeout=timeout,
    )  # fmt: skip
    if have.returncode == 0:  # the outdated stand-in, untagged now (kept if something uses it)
        run("rmi", old_id, check=False)


def image_size(image: str) -> int:
    return int(run("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def inspect(name: str) -> dict:
    return json.loads(run("inspect", name).stdout)[0]


def health_status(name: str) -> str | None:
    """The container's health status (podman 4 calls it State.Healthcheck, podman 5 State.Health)."""
    state = inspect(name)["State"]
    health = state.get("Health") or state.get("Healthcheck") or {}
    return health.get("Status")


def host_pids(name: str) -> list[int]:
    """Host pids of the container's processes (we run as root, so /proc/<pid> is readable)."""
    out = run("top", name, "hpid").stdout.split()
    return [int(p) for p in out[1:] if p.isdigit()]


@dataclass
class ProcessMemory:
    processes: int
    rss_mib: float  # sum of RSS: counts pages shared between master and workers once per process
    pss_mib: float  # proportional set size: shared pages split between the processes


def process_memory(pids: list[int]) -> ProcessMemory:
    rss = pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss"):
                kib = int(value.split()[0])
                if key == "Rss":
                    rss += kib
                else:
                    pss += kib
    return ProcessMemory(len(pids), rss / 1024, pss / 1024)


def process_uids(pids: list[int]) -> set[int]:
    uids = set()
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                uids.update(int(u) for u in line.split()[1:])
    return uids


def serving_install_includes_tensorflow() -> bool:
    """Does the image recipe install TensorFlow? (Dockerfile.serve, its install script, pyproject.)

    Looks at the recipe's ``pip install`` commands (comments ignored, continuation lines joined):
    TensorFlow named there, or in the package's base dependencies or the extras they install
    (``".[extra,...]"``). An ENV such as KERAS_BACKEND=tensorflow installs nothing.
    """

    def installs(path: Path) -> list[str]:
        lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        commands = re.split(r"(?<!\\)\n", "\n".join(lines))
        return [c for c in commands if re.search(r"\bpip\b.*\binstall\b", c, re.DOTALL)]

    commands = installs(REPO_ROOT / "Dockerfile.serve") + installs(
        REPO_ROOT / "deploy/docker/install-serve.sh"
    )
    if any(re.search(r"tensorflow", c, re.IGNORECASE) for c in commands):
        return True
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project.get("dependencies", []))
    for extras in re.findall(r"\.\[([\w,.-]+)\]", "\n".join(commands)):
        for extra in extras.split(","):
            deps += project.get("optional-dependencies", {}).get(extra.strip(), [])
    return any(re.match(r"\s*tensorflow\b", dep, re.IGNORECASE) for dep in deps)
