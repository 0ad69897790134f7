"""The versioned model repository: which bundle directories hold which versions of a model.

Layout (``DLQR_ARTIFACTS_DIR``)::

    artifacts/<model>/<version>/manifest.json ...   one bundle per version (what training writes)
    artifacts/<model>/manifest.json ...             a flat bundle: still accepted, as one version

A model directory is *versioned* as soon as one of its sub-directories holds a
``manifest.json``; otherwise a ``manifest.json`` directly inside it makes it a
flat bundle (its version is the manifest's). Names starting with ``.`` are
never versions: they are staging directories (``.<version>.tmp-...``) or
versions an operator parked (``mv 2026.05.01.120000 .2026.05.01.120000``).
A new version appears by renaming a complete directory into place, so a
reader never sees half a bundle; :func:`new_version_dir` does exactly that.

Versions are ordered "naturally": runs of digits compare as numbers, so
``v10`` > ``v9`` and training's UTC timestamps (``2026.05.01.120000``) sort by
time. The *policy* (``DLQR_VERSION_POLICY``) says which versions are served:
``routing`` (the default: the ``stable`` version named by the model's
``routing.json``, plus its canary and shadow; without a routing file, as
``latest``), ``latest`` (the greatest version that verifies and passes its
self-test), ``all``, or one pinned version, for every model or per model
(``wine:2026.05.01.120000,digit:all``).

Standard library only: both training (writing) and serving (reading) use it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
LATEST = "latest"
ALL = "all"
#: Serve what the model's ``routing.json`` names (:mod:`dlqr.routing`); without one, as ``latest``.
ROUTING = "routing"
#: Characters allowed in a version directory name (also what makes it safe in a URL path).
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")

_DIGITS = re.compile(r"(\d+)")


def version_key(version: str) -> tuple:
    """Natural sort key: digit runs compare as integers (``v9`` < ``v10``)."""
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in _DIGITS.split(version) if p)


@dataclass(frozen=True)
class Candidate:
    """One version directory found on disk (not yet verified)."""

    version: str
    path: Path
    #: Cheap identity of what is on disk: changes when the directory is replaced or resealed.
    fingerprint: tuple
    flat: bool = False


def _stat_key(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return ()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _manifest_version(path: Path) -> str | None:
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version is not None else None


def scan(model_dir: Path | str) -> list[Candidate]:
    """The versions present under one model directory, greatest first (cheap: a listing and stats).

    A versioned directory's candidates are its visible sub-directories (a sub-directory
    without a manifest is still listed, so that verification can refuse it by name). A
    flat bundle is one candidate named by its manifest's version.
    """
    model_dir = Path(model_dir)
    try:
        entries = [e for e in os.scandir(model_dir) if not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    subdirs = [e for e in entries if e.is_dir(follow_symlinks=True)]
    versioned = [e for e in subdirs if os.path.isfile(os.path.join(e.path, MANIFEST))]
    if not versioned and os.path.isfile(model_dir / MANIFEST):
        version = _manifest_version(model_dir) or "unversioned"
        fp = ("flat", _stat_key(model_dir / MANIFEST))
        return [Candidate(version, model_dir, fp, flat=True)]
    out = [
        Candidate(e.name, Path(e.path), (_stat_key(Path(e.path)), _stat_key(Path(e.path) / MANIFEST)))
        for e in subdirs
        if e.name != "report"  # a flat bundle's own report/ folder is never a version
    ]
    return sorted(out, key=lambda c: version_key(c.version), reverse=True)


def latest_dir(model_dir: Path | str) -> Path | None:
    """Where the greatest version of a model lives (flat or versioned), or None.

    For tools that read one bundle (bench, evaluate, examples); serving verifies
    candidates and falls back to an older one when the newest is broken.
    """
    for cand in scan(model_dir):
        if (cand.path / MANIFEST).is_file():
            return cand.path
    return None


def version_dir(model_dir: Path | str, version: str) -> Path | None:
    """Directory of one version of a model (flat or versioned), or None when absent."""
    for cand in scan(model_dir):
        if cand.version == version:
            return cand.path
    return None


# ---------------------------------------------------------------------- policy


class PolicyError(ValueError):
    """DLQR_VERSION_POLICY cannot be parsed."""


@dataclass(frozen=True)
class Policy:
    """Served-version policy: ``latest``, ``all`` or a pinned version, per model."""

    default: str = LATEST
    per_model: tuple[tuple[str, str], ...] = ()

    def for_model(self, name: str) -> str:
        return dict(self.per_model).get(name, self.default)

    def describe(self, name: str) -> str:
        p = self.for_model(name)
        return p if p in (LATEST, ALL, ROUTING) else f"pinned {p}"


def _check_value(value: str, where: str) -> str:
    if value in (LATEST, ALL, ROUTING) or VERSION_PATTERN.match(value):
        return value
    raise PolicyError(f"{where}: {value!r} is not 'routing', 'latest', 'all' or a version name")


def parse_policy(text: str) -> Policy:
    """``latest`` | ``all`` | ``<version>`` | ``model:policy,...`` (unlisted models: ``latest``,
    or the one bare value given alongside)."""
    text = (text or "").strip()
    if not text:
        return Policy()
    default, per_model = LATEST, []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition(":")
        if sep:
            if not name.strip():
                raise PolicyError(f"{part!r}: model name is empty")
            per_model.append((name.strip(), _check_value(value.strip(), part)))
        else:
            default = _check_value(part, part)
    return Policy(default, tuple(per_model))


# ---------------------------------------------------------------------- writing


def check_version_name(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise ValueError(
            f"version {version!r}: use letters, digits and . _ + - (at most 128, not starting with '.')"
        )
    return version


def migrate_flat(model_dir: Path | str) -> Path | None:
    """Turn a flat bundle ``<model>/`` into ``<model>/<its version>/``; return the new path.

    The copy is renamed into place before the flat files are removed, so a server
    watching the directory always sees that version (first flat, then versioned).
    """
    model_dir = Path(model_dir)
    if not (model_dir / MANIFEST).is_file() or any(c.flat is False for c in scan(model_dir)):
        return None
    version = check_version_name(_manifest_version(model_dir) or "unversioned")
    top = [p for p in model_dir.iterdir() if not p.name.startswith(".")]
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=model_dir))
    try:
        for p in top:
            if p.is_dir():
                shutil.copytree(p, staging / p.name)
            else:
                shutil.copy2(p, staging / p.name)
        dest = model_dir / version
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (model_dir / MANIFEST).unlink()  # first: the flat bundle stops being one at once
    for p in top:
        if p.name == MANIFEST:
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return dest
