"""Datasets: locate or download, verify, parse and split the three real datasets.

Resolution order for every file:

1. an explicit data directory (``--data-dir`` or ``$DLQR_DATA_DIR``), laid out
   as ``<dir>/<dataset>/<file>`` -- used as is, never downloaded into;
2. the download cache (``$DLQR_CACHE_DIR``, default ``~/.cache/dlqr``);
3. a download from the canonical URLs (or ``$DLQR_DATA_MIRROR``) into the cache.

Whatever the source, the sha256 of the *decompressed payload* must equal the
published value, so a re-compressed mirror is accepted but a truncated or
different file never is. Nothing here trains on an unverified file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlqr.cards import digit as DIGIT
from dlqr.cards import seizure as SEIZURE
from dlqr.cards import wine as WINE


class DataError(RuntimeError):
    """A dataset file is missing, unreadable, or does not match its checksum."""


@dataclass(frozen=True)
class RemoteFile:
    """One dataset file: local name, canonical URLs and payload checksum."""

    dataset: str
    name: str
    payload_sha256: str
    urls: tuple[str, ...]
    #: Alternative payload hashes of byte-different but value-identical copies
    #: (e.g. the UCI seizure CSV with quoted header / CRLF, see SOURCE notes).
    normalized_sha256: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

FILES: dict[str, RemoteFile] = {
    f.name: f
    for f in (
        RemoteFile(
            "wine",
            "winequality-white.csv",
            "76c3f809815c17c07212622f776311faeb31e87610d52c26d87d6e361b169836",
            ("https://archive.ics.uci.edu/ml/machine-learning-databases/wine-quality/winequality-white.csv",),
        ),
        RemoteFile(
            "seizure",
            "epileptic_seizure_recognition.csv.gz",
            "759a8c4016397a4b6f9d18b6a20c15571e9f89d6034fe2320bf01a5fb76d51ab",
            ("https://archive.ics.uci.edu/ml/machine-learning-databases/00388/data.csv",),
            normalized_sha256="759a8c4016397a4b6f9d18b6a20c15571e9f89d6034fe2320bf01a5fb76d51ab",
            aliases=("data.csv", "Epileptic Seizure Recognition.csv"),
        ),
        *(
            RemoteFile("mnist", f"{stem}.gz", sha, tuple(m + f"{stem}.gz" for m in _MNIST_MIRRORS))
            for stem, sha in (
                (
                    "train-images-idx3-ubyte",
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                ),
                (
                    "train-labels-idx1-ubyte",
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                ),
                (
                    "t10k-images-idx3-ubyte",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                ),
                (
                    "t10k-labels-idx1-ubyte",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                ),
            )
        ),
    )
}


#: Appended to a failed download: how to train from local copies instead (e.g. offline).
OFFLINE_HINT = (
    "Offline or behind a proxy? Point at a local copy of the data laid out as <dir>/<dataset>/<file>: "
    "--data-dir DIR or DLQR_DATA_DIR=DIR (`make train` passes --data-dir ../shared/data when that "
    "directory exists), or a mirror with DLQR_DATA_MIRROR=URL."
)


def default_cache_dir() -> Path:
    return Path(os.environ.get("DLQR_CACHE_DIR") or Path.home() / ".cache" / "dlqr")


def default_data_dir() -> Path | None:
    env = os.environ.get("DLQR_DATA_DIR")
    return Path(env) if env else None


def read_payload(path: Path) -> bytes:
    """File bytes, transparently gunzipped (detected by magic, not by name)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:  # truncated or corrupt gzip stream
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return raw


def _normalize_csv(payload: bytes) -> bytes:
    """Canonical bytes of a CSV copy: LF line endings, no quotes, empty first header cell."""
    text = payload.replace(b"\r\n", b"\n").replace(b'"', b"")
    head, sep, rest = text.partition(b"\n")
    cells = head.split(b",")
    if cells and cells[0] in (b"Unnamed", b"Unnamed: 0", b""):
        cells[0] = b""
    return b",".join(cells) + sep + rest


def verify_payload(spec: RemoteFile, path: Path) -> bytes:
    """Return the verified decompressed payload of ``path`` or raise DataError."""
    payload = read_payload(path)
    actual = hashlib.sha256(payload).hexdigest()
    if actual == spec.payload_sha256:
        return payload
    if spec.normalized_sha256 is not None:
        normalized = _normalize_csv(payload)
        if hashlib.sha256(normalized).hexdigest() == spec.normalized_sha256:
            return normalized
    raise DataError(
        f"checksum mismatch for {spec.dataset}/{spec.name} at {path}: "
        f"expected payload sha256 {spec.payload_sha256}, got {actual} "
        f"({len(payload):,} bytes). Refusing to use it; delete it to re-download."
    )


def _mirror_urls(spec: RemoteFile) -> tuple[str, ...]:
    mirror = os.environ.get("DLQR_DATA_MIRROR")
    if mirror:
        return (mirror.rstrip("/") + f"/{spec.dataset}/{spec.name}",)
    return spec.urls


def download(
    spec: RemoteFile, cache_dir: Path, urls: tuple[str, ...] | None = None, timeout: float = 60.0
) -> Path:
    """Download into the cache, verifying before the atomic rename into place."""
    dest = cache_dir / spec.dataset / spec.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls or _mirror_urls(spec):
        fd, tmp = tempfile.mkstemp(prefix=f".{spec.name}.", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                while block := resp.read(1 << 20):
                    out.write(block)
            verify_payload(spec, Path(tmp))
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, OSError, DataError) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataError(
        f"could not download {spec.dataset}/{spec.name}:\n  " + "\n  ".join(errors) + "\n" + OFFLINE_HINT
    )


def fetch(
    name: str, data_dir: Path | str | None = None, cache_dir: Path | str | None = None
) -> tuple[Path, bytes]:
    """Locate (or download) one file and return its path and verified payload."""
    spec = FILES[name]
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if data_dir is not None:
        for candidate in (spec.name, *spec.aliases):
            for p in (data_dir / spec.dataset / candidate, data_dir / candidate):
                if p.is_file():
                    return p, verify_payload(spec, p)
        raise DataError(f"{spec.dataset}/{spec.name} not found under data dir {data_dir}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache / spec.dataset / spec.name
    if cached.is_file():
        try:
            return cached, verify_payload(spec, cached)
        except DataError:
            cached.unlink()  # a stale or corrupt cache entry: fetch it again
    path = download(spec, cache)
    return path, verify_payload(spec, path)


def payload_checksums(dataset: str) -> dict[str, str]:
    """Published payload sha256 of every file a dataset uses (for the manifest)."""
    return {f.name: f.payload_sha256 for f in FILES.values() if f.dataset == dataset}


# --------------------------------------------------------------------- parsing


def parse_idx(payload: bytes) -> np.ndarray:
    """Parse an IDX (MNIST) payload of unsigned bytes into an ndarray."""
    if len(payload) < 4:
        raise DataError("IDX payload too short for a header")
    zero, dtype_code, ndim = struct.unpack(">HBB", payload[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"not an unsigned-byte IDX file (magic {payload[:4].hex()})")
    header = 4 + 4 * ndim
    if ndim == 0 or len(payload) < header:
        raise DataError("IDX header truncated")
    dims = struct.unpack(f">{ndim}I", payload[4:header])
    expected = int(np.prod(dims))
    if len(payload) - header != expected:
        raise DataError(f"IDX body has {len(payload) - header} bytes, dims {dims} need {expected}")
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(dims)


@dataclass
class WineData:
    x: np.ndarray  # (n, 10) float64, columns in WINE.FEATURES order
    y: np.ndarray  # (n,) alcohol % vol
    sha256: dict[str, str]


def load_wine(data_dir=None, cache_dir=None) -> WineData:
    """The UCI white-wine table: 10 physico-chemical inputs, alcohol target."""
    import pandas as pd

    spec = FILES["winequality-white.csv"]
    _, payload = fetch(spec.name, data_dir, cache_dir)
    df = pd.read_csv(io.BytesIO(payload), sep=";")
    missing = [c for c in (*WINE.CSV_COLUMNS, WINE.TARGET_CSV_COLUMN) if c not in df.columns]
    if missing:
        raise DataError(f"wine CSV lacks columns {missing}")
    x = df[list(WINE.CSV_COLUMNS)].to_numpy(dtype=np.float64)
    y = df[WINE.TARGET_CSV_COLUMN].to_numpy(dtype=np.float64)
    return WineData(x, y, {spec.name: spec.payload_sha256})


@dataclass
class SeizureData:
    x: np.ndarray  # (n, 178) float64
    y: np.ndarray  # (n,) int 0/1, 1 = seizure
    y5: np.ndarray  # (n,) original UCI class 1..5
    ids: np.ndarray  # (n,) str, e.g. "X21.V1.791"
    groups: np.ndarray  # (n,) str recording id, e.g. "V1.791"
    sha256: dict[str, str]


def recording_of(row_id: str) -> str:
    """Recording id of a UCI row id ``X<chunk>.<recording>`` (all 23 chunks share it)."""
    chunk, sep, rec = row_id.partition(".")
    if not sep or not chunk.startswith("X") or not rec:
        raise DataError(f"unexpected seizure row id {row_id!r}")
    return rec


def load_seizure(data_dir=None, cache_dir=None) -> SeizureData:
    """The UCI Epileptic Seizure Recognition table, binarised (y == 1 is a seizure)."""
    import pandas as pd

    spec = FILES["epileptic_seizure_recognition.csv.gz"]
    _, payload = fetch(spec.name, data_dir, cache_dir)
    df = pd.read_csv(io.BytesIO(payload))
    id_col = df.columns[0]
    feats = list(SEIZURE.FEATURES)
    if list(df.columns[1:-1]) != feats or df.columns[-1] != "y":
        raise DataError("seizure CSV columns are not <id>, X1..X178, y")
    ids = df[id_col].astype(str).to_numpy()
    y5 = df["y"].to_numpy(dtype=np.int64)
    return SeizureData(
        x=df[feats].to_numpy(dtype=np.float64),
        y=(y5 == SEIZURE.POSITIVE_LABEL).astype(np.int64),
        y5=y5,
        ids=ids,
        groups=np.array([recording_of(i) for i in ids]),
        sha256={spec.name: spec.payload_sha256},
    )


@dataclass
class MnistData:
    x_train: np.ndarray  # (60000, 28, 28) uint8
    y_train: np.ndarray
    x_test: np.ndarray  # (10000, 28, 28) uint8
    y_test: np.ndarray
    sha256: dict[str, str]


def load_mnist(data_dir=None, cache_dir=None) -> MnistData:
    """The four MNIST IDX files in their original order."""
    arrays = {}
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        _, payload = fetch(f"{stem}.gz", data_dir, cache_dir)
        arrays[stem] = parse_idx(payload)
    xtr, ytr = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    xte, yte = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    for x, y in ((xtr, ytr), (xte, yte)):
        if x.shape[1:] != (DIGIT.HEIGHT, DIGIT.WIDTH) or len(x) != len(y) or y.max() > 9:
            raise DataError(f"MNIST arrays have unexpected shapes {x.shape}/{y.shape}")
    return MnistData(xtr, ytr, xte, yte, payload_checksums("mnist"))


# ---------------------------------------------------------------------- splits


def random_split(n: int, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Seeded row split into train/val/test index arrays (sorted)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def grouped_split(
    groups: np.ndarray, labels: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> dict[str, np.ndarray]:
    """Split rows so that every group (EEG recording) lies in exactly one split.

    Groups are stratified by their label (a recording has one class), so each
    split keeps the class balance; the assignment is a seeded permutation.
    """
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    group_label = np.zeros(len(uniq), dtype=labels.dtype)
    group_label[inverse] = labels
    if np.any(group_label[inverse] != labels):
        raise DataError("a group carries more than one label; cannot stratify by group")
    assign = np.empty(len(uniq), dtype=np.int64)
    for lab in np.unique(group_label):
        members = np.flatnonzero(group_label == lab)
        members = members[rng.permutation(len(members))]
        n_test = int(round(fractions[2] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        assign[members[:n_test]] = 2
        assign[members[n_test : n_test + n_val]] = 1
        assign[members[n_test + n_val :]] = 0
    row_assign = assign[inverse]
    return {k: np.flatnonzero(row_assign == i) for i, k in enumerate(("train", "val", "test"))}


def duplicate_groups(x: np.ndarray) -> np.ndarray:
    """Group id of every row: rows with the identical input vector share one id.

    Ids index the sorted distinct rows (``np.unique``), so they do not depend
    on the row order or on any seed.
    """
    _, inverse = np.unique(np.asarray(x), axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def grouped_row_split(
    groups: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> dict[str, np.ndarray]:
    """Split rows so that every group lies in exactly one split, sized by rows (not stratified).

    Groups are taken in a seeded random order and dealt to test, then val,
    until each holds its share of the *rows*; the rest is train. Used for wine,
    whose groups are identical input vectors (:func:`duplicate_groups`).
    """
    rng = np.random.default_rng(seed)
    uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = rng.permutation(len(uniq))
    ends = np.cumsum(counts[order])  # rows covered after dealing each group, in dealing order
    n = len(groups)
    n_test = int(round(fractions[2] * n))
    n_val = int(round(fractions[1] * n))
    assign = np.zeros(len(uniq), dtype=np.int64)
    # A group goes to test while the rows dealt before it are < n_test, then to val likewise.
    starts = ends - counts[order]
    assign[order[starts < n_test]] = 2
    assign[order[(starts >= n_test) & (starts < n_test + n_val)]] = 1
    row_assign = assign[inverse]
    return {k: np.flatnonzero(row_assign == i) for i, k in enumerate(("train", "val", "test"))}


def grouped_kfold(groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint row-index folds, each a union of whole groups (seeded, sized by rows)."""
    rng = np.random.default_rng(seed)
    uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(uniq))
    starts = np.cumsum(counts[order]) - counts[order]
    fold_of = np.empty(len(uniq), dtype=np.int64)
    fold_of[order] = np.minimum(starts * k // len(groups), k - 1)
    row_fold = fold_of[inverse.reshape(-1)]
    return [np.flatnonzero(row_fold == f) for f in range(k)]


def mnist_split(n_train: int, n_val: int) -> dict[str, np.ndarray]:
    """The book's MNIST validation split: the last ``n_val`` training images."""
    if not 0 < n_val < n_train:
        raise DataError(f"validation_size must be between 1 and {n_train - 1}, got {n_val}")
    return {"train": np.arange(n_train - n_val), "val": np.arange(n_train - n_val, n_train)}


# --------------------------------------------------------------------- scalers


def fit_standard_scaler(x: np.ndarray):
    """scikit-learn ``StandardScaler`` fitted on ``x`` (training rows only), in float64.

    Population standard deviation (ddof 0); a constant column gets scale 1, so
    it is centred but never divided by zero.
    """
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    return StandardScaler().fit(x)


def scaler_json(scaler) -> dict:
    """The bundle's JSON form of a fitted scaler: ``{"type": "standard", "mean": [...], "scale": [...]}``."""
    return {"type": "standard", "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()}
