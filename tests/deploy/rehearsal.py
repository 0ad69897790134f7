"""Replay Dockerfile.serve without Docker: build its filesystem in a temporary
directory, install with its own RUN step, and start its CMD with its ENV and
USER.

How each instruction is replayed (``rootfs`` stands for the image's ``/``):

* builder ``COPY``: files the build context would send (``.dockerignore``
  applied) are copied to ``rootfs`` + destination; a source missing from the
  context fails the rehearsal, as it fails ``docker build``.
* builder ``RUN``: the one install-script command, run with the builder's ENV
  in its WORKDIR, with the venv path moved under ``rootfs``. The venv must be
  created at its final path because venvs are not relocatable, so the runtime
  stage's ``COPY --from=builder`` must copy it to the same path (checked). The
  builder's WORKDIR is deleted afterwards, as it is not in the final image.
* runtime ``RUN``: only the commands this module can emulate (``groupadd``,
  ``useradd``, ``install -d``, and the removal of the base image's system pip,
  which concerns no file of the rehearsed image); anything else is an error,
  so a new step in the Dockerfile cannot be silently skipped here.
* ``ENV``: values that name paths the image provides are moved under
  ``rootfs``; ``PATH`` entries are looked up in ``rootfs`` first, then on the
  host (a union, like the image's layers over its base).
* ``USER``: the server runs with that numeric uid/gid (via ``setpriv``) when
  the tests run as root; otherwise it runs as the current, already
  unprivileged, user.

The differences from a real container, all deliberate: the interpreter that
creates the venv is the host's Python of the base image's minor version (the
image's ``/usr/local/bin/python3`` does not exist here); pip may reuse the
host's pip cache (the Dockerfile uses a BuildKit cache mount for the same
purpose); and the server binds ``127.0.0.1:<free port>`` instead of
``0.0.0.0:8000`` so the tests only ever listen and send on loopback.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tests.deploy import dockerfile as D

INSTALL_SCRIPT = "deploy/docker/install-serve.sh"
BUILDER_KEYWORDS = {"ARG", "ENV", "WORKDIR", "COPY", "RUN"}
RUNTIME_KEYWORDS = {"ARG", "LABEL", "RUN", "COPY", "WORKDIR", "ENV", "USER", "EXPOSE", "HEALTHCHECK", "CMD"}


class RehearsalError(AssertionError):
    """The Dockerfile does something the image build (or this replay) cannot do."""


@dataclass
class Image:
    """The rehearsed image: its root directory and what it runs, with how."""

    rootfs: Path
    workdir: str
    env: dict[str, str]
    cmd: list[str]
    healthcheck: list[str] | None
    uid: int
    gid: int
    home: str
    owned: list[str] = field(default_factory=list)
    install_log: str = ""

    def host_path(self, container_path: str) -> Path:
        """Where a path of the image lives on this machine."""
        return self.rootfs / container_path.lstrip("/")

    def _is_owned(self, p: str) -> bool:
        return any(p == r or p.startswith(r.rstrip("/") + "/") for r in self.owned)

    def relocate(self, value: str) -> str:
        """Move the image's own absolute paths (single or ':'-separated) under rootfs."""
        parts = value.split(":")
        if not value.startswith("/") or not all(p.startswith("/") for p in parts):
            return value
        return ":".join(str(self.host_path(p)) if self._is_owned(p) else p for p in parts)

    def process_env(self, overrides: dict[str, str] | None = None) -> dict[str, str]:
        """The container's environment, as seen from this machine."""
        env = {"HOME": self.home, "LANG": "C.UTF-8", "HOSTNAME": "dlqr-rehearsal"}
        for key, value in self.env.items():
            env[key] = value if key == "PATH" else self.relocate(value)
        path = []
        for entry in self.env.get("PATH", D.DOCKER_DEFAULT_PATH).split(":"):
            inside = self.host_path(entry)
            if inside.is_dir():
                path.append(str(inside))
            path.append(entry)
        env["PATH"] = ":".join(path)
        env.update(overrides or {})
        return env

    def user_prefix(self) -> list[str]:
        """Command prefix that runs a process as the image's USER (when we are root)."""
        return privilege_prefix(self.uid, self.gid)


def privilege_prefix(uid: int, gid: int) -> list[str]:
    if os.geteuid() != 0:
        return []  # already an unprivileged user
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RehearsalError("running as root but setpriv (util-linux) is missing: cannot drop privileges")
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def python_version_of(base_image: str) -> str:
    """'3.11' from an official Python image reference such as python:3.11-slim-bookworm."""
    m = re.fullmatch(
        r"(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)[\w.-]*(?:@sha256:[0-9a-f]{64})?", base_image
    )
    if not m:
        raise RehearsalError(f"base image {base_image!r} is not an official python:X.Y-* image")
    return m.group(1)


def find_interpreter(version: str, uid: int, gid: int) -> str | None:
    """A host Python of ``version`` with venv + ensurepip that the image's user can run."""
    candidates = [
        f"/usr/local/bin/python{version}",
        f"/usr/bin/python{version}",
        shutil.which(f"python{version}"),
        getattr(sys, "_base_executable", None),
        sys.executable,
    ]
    check = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
    seen = set()
    for cand in candidates:
        if not cand or cand in seen or not os.path.exists(cand):
            continue
        seen.add(cand)
        try:
            out = subprocess.run(
                [*privilege_prefix(uid, gid), cand, "-c", check],
                capture_output=True,
                text=True,
                timeout=60,
                env={"PATH": D.DOCKER_DEFAULT_PATH},
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return cand
    return None


def _copy_tree_file(src: Path, dst: Path, chmod: str | None, chown: tuple[int, int] | None) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    if chmod:
        os.chmod(dst, int(chmod, 8))
    if chown and os.geteuid() == 0:
        os.chown(dst, *chown)


def materialize(copy: D.Copy, repo: Path, context: set[str], rootfs: Path) -> list[str]:
    """Replay one COPY from the build context; return the destination paths it created."""
    if copy.chown:
        raise RehearsalError(
            f"line {copy.lineno}: COPY --chown is not replayed; files belong to root in the image"
        )
    created = []
    multiple = len(copy.sources) > 1
    for src in copy.sources:
        rel = src.strip("/")
        under = sorted(f for f in context if f.startswith(rel + "/"))
        dest = copy.dest
        if rel in context:  # a single file
            target = dest + PurePosixPath(rel).name if (dest.endswith("/") or multiple) else dest
            _copy_tree_file(repo / rel, rootfs / target.lstrip("/"), copy.chmod, None)
            created.append(target)
        elif under:  # a directory: its contents go into dest
            base = dest.rstrip("/")
            for f in under:
                _copy_tree_file(
                    repo / f, rootfs / (base + "/" + f[len(rel) + 1 :]).lstrip("/"), copy.chmod, None
                )
            created.append(base)
        else:
            raise RehearsalError(
                f"line {copy.lineno}: COPY source {src!r} is not in the build context "
                "(missing, or excluded by .dockerignore): docker build would fail"
            )
    return created


def _mkdirs_world_readable(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)


def _runtime_run_steps(cmd: str) -> list[list[str]]:
    """The ``&&``-joined commands of a runtime RUN; an error for any this module cannot replay."""
    steps = []
    for part in re.split(r"\s*&&\s*", cmd.strip()):
        argv = shlex.split(part)
        if not argv:
            continue
        if argv[:4] == ["python3", "-m", "pip", "uninstall"]:
            # Removes the base image's system pip; the server never uses the
            # system site-packages (the venv does not include them), so there
            # is nothing to replay on this machine's Python.
            continue
        if argv[0] not in ("groupadd", "useradd") and not (argv[0] == "install" and "-d" in argv):
            raise RehearsalError(
                f"runtime RUN step {part!r} is not replayed by tests/deploy/rehearsal.py: teach it"
            )
        steps.append(argv)
    return steps


def _emulate_runtime_run(cmd: str, rootfs: Path, users: dict[str, int], owned: list[str]) -> str | None:
    """Replay groupadd/useradd/install -d; return useradd's --home-dir if seen."""
    home = None
    for argv in _runtime_run_steps(cmd):
        prog = argv[0]
        if prog in ("groupadd", "useradd"):
            name = argv[-1]
            if "--uid" in argv:
                users[name] = int(argv[argv.index("--uid") + 1])
            if "--gid" in argv and prog == "groupadd":
                users["group:" + name] = int(argv[argv.index("--gid") + 1])
            if "--home-dir" in argv:
                home = argv[argv.index("--home-dir") + 1]
            continue
        opts = {}
        dirs = []
        it = iter(argv[1:])
        for a in it:
            if a in ("-o", "-g", "-m"):
                opts[a] = next(it)
            elif a != "-d":
                dirs.append(a)
        for d in dirs:
            host = rootfs / d.lstrip("/")
            host.mkdir(parents=True, exist_ok=True)
            # Every parent the image creates is root-owned and world-traversable.
            for parent in list(host.parents):
                if parent == rootfs or rootfs not in parent.parents:
                    break
                os.chmod(parent, 0o755)
            os.chmod(host, int(opts.get("-m", "755"), 8))
            if os.geteuid() == 0:
                uid = _resolve_id(opts.get("-o", "0"), users, group=False)
                gid = _resolve_id(opts.get("-g", "0"), users, group=True)
                os.chown(host, uid, gid)
            owned.append(d)
    return home


def _resolve_id(value: str, users: dict[str, int], group: bool) -> int:
    if value.isdigit():
        return int(value)
    key = ("group:" + value) if group else value
    if key not in users:
        raise RehearsalError(f"unknown {'group' if group else 'user'} {value!r} in install -d")
    return users[key]


def check_replayable(df: D.Dockerfile) -> str:
    """Fail unless every instruction of Dockerfile.serve is one this module replays; return the venv path."""
    if len(df.stages) != 2 or df.stages[0].name != "builder":
        raise RehearsalError("Dockerfile.serve must have two stages: 'builder' then the runtime")
    builder, runtime = df.stages
    for stage, allowed in ((builder, BUILDER_KEYWORDS), (runtime, RUNTIME_KEYWORDS)):
        unknown = {i.keyword for i in stage.instructions} - allowed
        if unknown:
            raise RehearsalError(
                f"stage {stage.name or 'runtime'} uses {sorted(unknown)}, which is not replayed"
            )
    runs = builder.all("RUN")
    if len(runs) != 1 or INSTALL_SCRIPT not in runs[0].args:
        raise RehearsalError(f"the builder stage must install with exactly one RUN of {INSTALL_SCRIPT}")
    venv = shlex.split(runs[0].args)[-1]
    if not venv.startswith("/"):
        raise RehearsalError(f"install script target {venv!r} must be an absolute path")
    if any(c.from_stage for c in D.copies(builder)):
        raise RehearsalError("builder COPY --from is not replayed")
    for c in D.copies(runtime):
        if c.from_stage and (c.from_stage != "builder" or c.sources != [venv] or c.dest.rstrip("/") != venv):
            raise RehearsalError(
                f"line {c.lineno}: only `COPY --from=builder {venv} {venv}` is supported "
                "(a venv only works at the path it was created at)"
            )
    for ins in runtime.all("RUN"):
        _runtime_run_steps(ins.args)
    if not re.fullmatch(r"\d+(?::\d+)?", runtime.user or ""):
        raise RehearsalError(
            f"USER {runtime.user!r} must be numeric uid[:gid] (Kubernetes runAsNonRoot needs it)"
        )
    if not runtime.one("CMD").exec_form():
        raise RehearsalError("CMD must use the exec (JSON) form")
    hc = runtime.all("HEALTHCHECK")
    if hc and not hc[0].args.upper().startswith("CMD "):
        raise RehearsalError("HEALTHCHECK must be HEALTHCHECK [options] CMD [...]")
    return venv


def build_serving_image(
    repo: Path, rootfs: Path, python: str, log_path: Path, timeout: float = 1200
) -> Image:
    """Replay Dockerfile.serve into ``rootfs``; returns the image description."""
    df = D.parse(repo / "Dockerfile.serve")
    venv = check_replayable(df)  # before spending a minute on the install
    builder, runtime = df.stages
    context = set(D.context_files(repo, D.read_dockerignore(repo / ".dockerignore")))
    _mkdirs_world_readable(rootfs)

    # ---- builder stage: its COPYs, then its one RUN (the install script)
    for c in D.copies(builder):
        materialize(c, repo, context, rootfs)
    (run,) = builder.all("RUN")
    argv = [str(rootfs / a.lstrip("/")) if a == venv else a for a in shlex.split(run.args)]
    build_env = dict(os.environ)  # network/pip settings of this machine, like the build host's
    for key, value in builder.env.items():
        if key != "PATH":
            build_env[key] = value
    build_env["PYTHON"] = python
    workdir = rootfs / builder.workdir.lstrip("/")
    with open(log_path, "w") as log:
        proc = subprocess.run(
            argv, cwd=workdir, env=build_env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
        )
    install_log = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RehearsalError(f"install step {run.args!r} failed ({proc.returncode}):\n{install_log[-4000:]}")
    # Later stages start from the base image, not from the builder's filesystem.
    shutil.rmtree(workdir)

    # ---- runtime stage: RUN emulation, COPYs (the venv is already in place), WORKDIR
    owned: list[str] = [venv]
    users: dict[str, int] = {}
    home = "/"
    for ins in runtime.all("RUN"):
        home = _emulate_runtime_run(ins.args, rootfs, users, owned) or home
    for c in D.copies(runtime):
        if not c.from_stage:
            owned.extend(materialize(c, repo, context, rootfs))
    _mkdirs_world_readable(rootfs / runtime.workdir.lstrip("/"))
    owned.append(runtime.workdir)
    for p in rootfs.rglob("*"):
        if p.is_dir():  # COPY creates missing parents as root 0755
            os.chmod(p, p.stat().st_mode | 0o555)
    uid, _, gid = runtime.user.partition(":")
    hc = runtime.all("HEALTHCHECK")
    healthcheck = (
        D.Instruction("CMD", {}, hc[0].args.split(None, 1)[1], hc[0].lineno).exec_form() if hc else None
    )
    return Image(
        rootfs=rootfs,
        workdir=runtime.workdir,
        env=dict(runtime.env),
        cmd=runtime.one("CMD").exec_form(),
        healthcheck=healthcheck,
        uid=int(uid),
        gid=int(gid or uid),
        home=home,
        owned=owned,
        install_log=install_log,
    )
