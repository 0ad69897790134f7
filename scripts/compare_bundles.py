"""Compare two bundles of one model: does a new `make train` reproduce a committed bundle?

Usage (from the repository root)::

    .venv/bin/python scripts/compare_bundles.py artifacts/wine/2026.11.27.184954 /tmp/art/wine/<version>

Prints, for the pair: whether every array of ``model.h5`` is bit-identical (and the file
bytes), the differences between ``metrics.json``, ``preprocessing.json`` and
``test_split.json``, the manifest minus its provenance (version, creation time, git
commit, timings, file hashes, ONNX block), the lines of ``MODEL_CARD.md`` that differ,
which report files differ, and whether both ``model.onnx`` give the same outputs on 2,000
random inputs (their bytes carry TensorFlow's per-process function counters, so they
differ between exports of the same weights). Exit status 0 when the weights and every
``metrics.json`` figure but ``fit_seconds`` (a wall time) match, else 1.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np

PROVENANCE = {"version", "created", "git_commit", "files", "onnx", "training"}
TIMINGS = {"fit_seconds"}


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
    return out


def diff_json(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in the {'second' if k not in a else 'first'} bundle")
            else:
                out += diff_json(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff_json(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def compare(first: Path, second: Path) -> bool:
    print(f"== {first} vs {second}")
    a, b = h5_arrays(first / "model.h5"), h5_arrays(second / "model.h5")
    same_weights = set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    print(f"model.h5: {len(a)} arrays, bit-identical: {same_weights}; "
          f"file bytes identical: {_sha(first / 'model.h5') == _sha(second / 'model.h5')}")  # fmt: skip
    figures_match = True
    for name in ("metrics.json", "preprocessing.json", "test_split.json"):
        d = diff_json(json.loads((first / name).read_text()), json.loads((second / name).read_text()))
        print(f"{name}: {'identical' if not d else f'{len(d)} differences'}")
        for line in d:
            print("   ", line)
        if name == "metrics.json":
            figures_match = all(line.split(":")[0].rsplit("/", 1)[-1] in TIMINGS for line in d)
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (first, second))
    d = diff_json(
        {k: v for k, v in ma.items() if k not in PROVENANCE},
        {k: v for k, v in mb.items() if k not in PROVENANCE},
    )
    print(f"manifest.json without {sorted(PROVENANCE)}: {'identical' if not d else f'{len(d)} differences'}")
    for line in d:
        print("   ", line)
    print(f"manifest training: {diff_json(ma.get('training'), mb.get('training')) or 'identical'}")
    files = sorted(k for k in set(ma["files"]) | set(mb["files"]) if ma["files"].get(k) != mb["files"].get(k))
    print(f"files whose sha256 differs: {', '.join(files) or 'none'}")
    card = [
        line
        for line in difflib.unified_diff(
            (first / "MODEL_CARD.md").read_text().splitlines(),
            (second / "MODEL_CARD.md").read_text().splitlines(),
            lineterm="",
            n=0,
        )
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    print(f"MODEL_CARD.md: {len(card)} differing lines")
    for line in card:
        print("   ", line[:200])
    if (first / "model.onnx").exists() and (second / "model.onnx").exists():
        import onnxruntime as ort

        sa, sb = (
            ort.InferenceSession(str(p / "model.onnx"), providers=["CPUExecutionProvider"])
            for p in (first, second)
        )
        inp = sa.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal((2000, inp.shape[1])).astype(np.float32)
        diff = float(
            np.abs(sa.run(None, {inp.name: x})[0] - sb.run(None, {sb.get_inputs()[0].name: x})[0]).max()
        )
        print(f"model.onnx: bytes identical {_sha(first / 'model.onnx') == _sha(second / 'model.onnx')}, "
              f"max abs output difference on 2,000 random inputs {diff:.3g}")  # fmt: skip
    ok = same_weights and figures_match
    print("REPRODUCED" if ok else "NOT REPRODUCED", "(weights and metrics.json figures)")
    return ok


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(0 if compare(Path(sys.argv[1]), Path(sys.argv[2])) else 1)
