"""Artifact bundles: the on-disk contract between training and serving.

A bundle is a directory ``artifacts/<model>/`` with::

    model.h5             Keras model, no optimizer state
    model.onnx           the same network for ONNX Runtime (what serving runs)
    preprocessing.json   feature order, scalers, threshold, class labels, ranges
    metrics.json         train/val/test metrics
    test_split.json      ids/indices of the test split, to recompute metrics
    report/...           plots and training history
    manifest.json        provenance + sha256 of every other file + golden pairs

``manifest.json`` is the last file written and is the only file not hashed by
itself. Bundles are written into a temporary sibling directory and renamed
into place, so an interrupted export never leaves something that verifies.
This module only needs the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Version of the on-disk bundle layout (manifest/preprocessing keys).
BUNDLE_FORMAT_VERSION = 1

MANIFEST = "manifest.json"
MODEL_FILE = "model.h5"
#: The serving runtime's model (ONNX Runtime), exported from the same Keras model.
ONNX_FILE = "model.onnx"
#: Human-readable model card rendered from the bundle's own facts.
MODEL_CARD_FILE = "MODEL_CARD.md"
PREPROCESSING = "preprocessing.json"
METRICS = "metrics.json"
TEST_SPLIT = "test_split.json"
REQUIRED_FILES = (MODEL_FILE, PREPROCESSING, METRICS, TEST_SPLIT)


class BundleError(Exception):
    """A bundle is missing, incomplete, tampered with or of an unknown format."""

    def __init__(self, message: str, path: Path | str | None = None):
        super().__init__(message)
        self.path = str(path) if path is not None else None


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _bundle_files(root: Path) -> list[str]:
    """Relative POSIX paths of every regular file in a bundle except the manifest."""
    rels = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(rel for rel in rels if rel != MANIFEST)


def dump_json(obj: Any, path: Path | str) -> None:
    """Write JSON deterministically (sorted keys, no NaN tokens)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def write_bundle(staging: Path, dest: Path, manifest: dict[str, Any]) -> Path:
    """Seal ``staging`` (already holding every bundle file) as ``dest``, atomically.

    Hashes every file into ``manifest["files"]``, writes the manifest last,
    fsyncs, then swaps the directory into place with ``os.replace`` semantics.
    An existing bundle at ``dest`` is replaced only after the new one is complete.
    """
    staging, dest = Path(staging), Path(dest)
    missing = [f for f in REQUIRED_FILES if not (staging / f).is_file()]
    if missing:
        raise BundleError(f"cannot seal bundle: missing {', '.join(missing)}", staging)
    manifest = dict(manifest)
    manifest["bundle_format"] = BUNDLE_FORMAT_VERSION
    manifest["files"] = {rel: sha256_file(staging / rel) for rel in _bundle_files(staging)}
    dump_json(manifest, staging / MANIFEST)
    for p in staging.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rmdir(old)
        os.replace(dest, old)
    os.replace(staging, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def staging_dir(dest: Path) -> Path:
    """A fresh temporary directory next to ``dest`` (same filesystem, so rename is atomic)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    # mkdtemp makes it 0700, and the directory is renamed into place as the bundle itself: give
    # it the mode any new directory gets (umask), or a server running as another user (the
    # image's uid 10001, a mounted volume) could not read the bundle and would refuse it.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    return staging


def read_json(path: Path) -> Any:
    """Parse one JSON file of a bundle; raise BundleError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"missing file {path.name}", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"unreadable JSON in {path.name}: {exc}", path) from None


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: parsed JSON documents plus the model file path."""

    name: str
    root: Path
    manifest: dict[str, Any]
    preprocessing: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def onnx_path(self) -> Path:
        return self.root / ONNX_FILE

    @property
    def onnx_sha256(self) -> str | None:
        return self.manifest["files"].get(ONNX_FILE)

    @property
    def has_onnx(self) -> bool:
        return ONNX_FILE in self.manifest.get("files", {})

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def model_sha256(self) -> str:
        return str(self.manifest["files"][MODEL_FILE])


def verify_bundle(root: Path | str, expected_name: str | None = None) -> dict[str, Any]:
    """Check a bundle against its manifest; return the manifest or raise BundleError.

    Refuses: a missing manifest (half-written bundle), an unknown bundle format,
    a wrong model name, a missing or extra file, or any sha256 mismatch.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"bundle directory {root} does not exist", root)
    manifest = read_json(root / MANIFEST)
    if not isinstance(manifest, dict):
        raise BundleError("manifest.json is not an object", root / MANIFEST)
    fmt = manifest.get("bundle_format")
    if fmt != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"unknown bundle format {fmt!r} (this code reads {BUNDLE_FORMAT_VERSION})",
            root / MANIFEST,
        )
    name = manifest.get("model")
    if not isinstance(name, str) or (expected_name is not None and name != expected_name):
        raise BundleError(f"manifest names model {name!r}, expected {expected_name!r}", root / MANIFEST)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError("manifest has no file list", root / MANIFEST)
    for required in REQUIRED_FILES:
        if required not in files:
            raise BundleError(f"manifest does not list {required}", root / MANIFEST)
    for rel, expected in files.items():
        path = root / rel
        # Refuse paths that escape the bundle (a crafted manifest).
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise BundleError(f"manifest lists an unsafe path {rel!r}", root / MANIFEST)
        if not path.is_file():
            raise BundleError(f"missing file {rel}", path)
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"sha256 mismatch for {rel}: manifest {expected}, file {actual}", path)
    extra = sorted(set(_bundle_files(root)) - set(files))
    if extra:
        raise BundleError(f"files not in manifest: {', '.join(extra)}", root / extra[0])
    return manifest


def load_bundle(root: Path | str, expected_name: str | None = None) -> Bundle:
    """Verify a bundle and parse its JSON documents (does not load the Keras model)."""
    root = Path(root)
    manifest = verify_bundle(root, expected_name)
    return Bundle(
        name=manifest["model"],
        root=root,
        manifest=manifest,
        preprocessing=read_json(root / PREPROCESSING),
        metrics=read_json(root / METRICS),
    )
