"""Data layer: IDX/CSV parsing, checksum verification, downloads, splits, scalers."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import struct
import threading

import numpy as np
import pytest

from dlqr import processing
from training import data as D
from training.recipes import wine as wine_recipe


def _idx(arr: np.ndarray) -> bytes:
    return (
        struct.pack(">HBB", 0, 8, arr.ndim)
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + arr.astype(np.uint8).tobytes()
    )


def test_parse_idx_roundtrip():
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = D.parse_idx(_idx(arr))
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "payload, msg",
    [
        (b"\x00\x00\x0d\x01" + b"\x00" * 8, "unsigned-byte"),  # float dtype code
        (_idx(np.zeros((3, 2), np.uint8))[:-1], "need 6"),  # truncated body
        (b"\x00\x00", "too short"),
    ],
)
def test_parse_idx_rejects_bad_input(payload, msg):
    with pytest.raises(D.DataError, match=msg):
        D.parse_idx(payload)


def _fake_spec(tmp_path, payload: bytes, dataset="wine", name="winequality-white.csv"):
    return D.RemoteFile(dataset, name, hashlib.sha256(payload).hexdigest(), ())


def test_verify_payload_accepts_recompressed_copy(tmp_path):
    payload = b"a;b\n1;2\n"
    spec = _fake_spec(tmp_path, payload)
    plain = tmp_path / "plain.csv"
    plain.write_bytes(payload)
    gz = tmp_path / "copy.csv.gz"
    gz.write_bytes(gzip.compress(payload, compresslevel=1, mtime=12345))
    assert D.verify_payload(spec, plain) == payload
    assert D.verify_payload(spec, gz) == payload  # different gzip bytes, same payload


def test_verify_payload_mismatch_names_file_and_both_hashes(tmp_path):
    spec = _fake_spec(tmp_path, b"expected")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"something else")
    with pytest.raises(D.DataError) as err:
        D.verify_payload(spec, bad)
    text = str(err.value)
    assert str(bad) in text and spec.payload_sha256 in text
    assert hashlib.sha256(b"something else").hexdigest() in text


def test_truncated_gzip_is_a_clear_error(tmp_path):
    spec = _fake_spec(tmp_path, b"x" * 1000)
    p = tmp_path / "t.gz"
    p.write_bytes(gzip.compress(b"x" * 1000)[:-10])
    with pytest.raises(D.DataError, match="corrupt or truncated"):
        D.verify_payload(spec, p)


def test_seizure_normalisation_accepts_uci_quoted_crlf_copy():
    canonical = b",X1,y\nX1.V1,5,1\n"
    uci = b'"Unnamed","X1","y"\r\n"X1.V1",5,1\r\n'
    assert D._normalize_csv(uci) == canonical


def test_data_dir_missing_file_is_clear(tmp_path):
    with pytest.raises(D.DataError, match="not found under data dir"):
        D.fetch("winequality-white.csv", data_dir=tmp_path)


@pytest.fixture
def loopback_server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving tmp_path/www (no internet in tests)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_download_verifies_and_caches(loopback_server, tmp_path, monkeypatch):
    root, base = loopback_server
    payload = b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"
    (root / "mnist").mkdir()
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(payload))
    spec = D.RemoteFile("mnist", "t10k-labels-idx1-ubyte.gz", hashlib.sha256(payload).hexdigest(), ())
    monkeypatch.setitem(D.FILES, spec.name, spec)
    monkeypatch.setenv("DLQR_DATA_MIRROR", base)
    monkeypatch.delenv("DLQR_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    path, got = D.fetch(spec.name, cache_dir=cache)
    assert got == payload and path == cache / "mnist" / spec.name
    np.testing.assert_array_equal(D.parse_idx(got), [1, 2, 3])
    # Second call is served from the cache even with the server's file gone.
    (root / "mnist" / spec.name).unlink()
    assert D.fetch(spec.name, cache_dir=cache)[1] == payload


def test_download_of_wrong_file_fails_and_leaves_no_cache_entry(loopback_server, tmp_path, monkeypatch):
    root, base = loopback_server
    (root / "wine").mkdir()
    (root / "wine" / "winequality-white.csv").write_bytes(b"tampered;file\n")
    monkeypatch.setenv("DLQR_DATA_MIRROR", base)
    monkeypatch.delenv("DLQR_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(D.DataError, match="checksum mismatch"):
        D.fetch("winequality-white.csv", cache_dir=cache)
    assert not any((cache / "wine").glob("*")), "a rejected download must not stay in the cache"


def test_download_404_is_a_clear_error(loopback_server, tmp_path, monkeypatch):
    _, base = loopback_server
    monkeypatch.setenv("DLQR_DATA_MIRROR", base)
    monkeypatch.delenv("DLQR_DATA_DIR", raising=False)
    with pytest.raises(D.DataError, match="could not download wine/winequality-white.csv"):
        D.fetch("winequality-white.csv", cache_dir=tmp_path / "c")


def test_offline_train_is_told_how_to_point_at_local_data(tmp_path, monkeypatch, capsys):
    """No --data-dir and no network: the error says how to use a local copy instead."""
    import socket

    from training.cli import main

    with socket.socket() as s:  # a loopback port nothing listens on: the download is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DLQR_DATA_MIRROR", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("DLQR_DATA_DIR", raising=False)
    assert main(["fetch", "wine", "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "could not download wine/winequality-white.csv" in err
    assert "--data-dir DIR or DLQR_DATA_DIR=DIR" in err and "<dir>/<dataset>/<file>" in err


def test_corrupt_cache_entry_is_replaced(loopback_server, tmp_path, monkeypatch):
    root, base = loopback_server
    payload = b"good;payload\n"
    (root / "wine").mkdir()
    (root / "wine" / "winequality-white.csv").write_bytes(payload)
    spec = D.RemoteFile("wine", "winequality-white.csv", hashlib.sha256(payload).hexdigest(), ())
    monkeypatch.setitem(D.FILES, spec.name, spec)
    monkeypatch.setenv("DLQR_DATA_MIRROR", base)
    monkeypatch.delenv("DLQR_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    (cache / "wine").mkdir(parents=True)
    (cache / "wine" / spec.name).write_bytes(b"trunc")
    assert D.fetch(spec.name, cache_dir=cache)[1] == payload


# ------------------------------------------------------------------- splits


def test_grouped_split_keeps_each_recording_on_one_side_and_is_deterministic():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"V{i}" for i in range(100)], 23)
    labels = np.repeat((np.arange(100) % 5 == 0).astype(int), 23)
    perm = rng.permutation(len(groups))  # shuffled rows, as in the UCI file
    groups, labels = groups[perm], labels[perm]
    a = D.grouped_split(groups, labels, (0.8, 0.1, 0.1), seed=7)
    b = D.grouped_split(groups, labels, (0.8, 0.1, 0.1), seed=7)
    c = D.grouped_split(groups, labels, (0.8, 0.1, 0.1), seed=8)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    sets = {k: set(groups[v]) for k, v in a.items()}
    assert (
        not (sets["train"] & sets["val"])
        and not (sets["train"] & sets["test"])
        and not (sets["val"] & sets["test"])
    )
    assert sum(len(v) for v in a.values()) == len(groups)
    # Stratified by recording label: 20 positive recordings -> 2 in test, 2 in val.
    assert len({g for g in sets["test"] if labels[groups == g][0] == 1}) == 2


def test_grouped_split_rejects_mixed_label_group():
    with pytest.raises(D.DataError):
        D.grouped_split(np.array(["a", "a", "b"]), np.array([0, 1, 0]), (0.8, 0.1, 0.1), 0)


def test_random_split_partitions_rows():
    s = D.random_split(1000, (0.7, 0.15, 0.15), seed=1)
    allidx = np.concatenate(list(s.values()))
    assert sorted(allidx.tolist()) == list(range(1000))
    assert [len(s[k]) for k in ("train", "val", "test")] == [700, 150, 150]


def test_recording_of():
    assert D.recording_of("X21.V1.791") == "V1.791"
    with pytest.raises(D.DataError):
        D.recording_of("garbage")


def test_standard_scaler_json_and_constant_column():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    js = D.scaler_json(D.fit_standard_scaler(x))
    assert js["type"] == "standard"
    np.testing.assert_allclose(js["mean"], [3.0, 5.0])
    np.testing.assert_allclose(js["scale"], [np.std([1.0, 3.0, 5.0]), 1.0])  # ddof 0; constant column -> 1
    z = processing.standardize(x, js["mean"], js["scale"])  # what serving applies
    np.testing.assert_allclose(z[:, 0].std(), 1.0, rtol=1e-6)
    assert np.all(z[:, 1] == 0.0)  # constant column: no division by zero
    assert D.scaler_json(D.fit_standard_scaler(np.array([1.0, 2.0, 3.0])))["mean"] == [2.0]  # 1-D target


def _assert_no_group_on_two_sides(groups: np.ndarray, split: dict[str, np.ndarray]) -> None:
    sides = [set(groups[v].tolist()) for v in split.values()]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(len(groups)))


def test_duplicate_groups_match_identical_rows():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [1.0, 2.5], [3.0, 4.0]])
    g = D.duplicate_groups(x)
    assert g[0] == g[2] and g[1] == g[4] and len(set(g.tolist())) == 3
    np.testing.assert_array_equal(D.duplicate_groups(x[::-1]), g[::-1])  # ids do not depend on row order


def test_grouped_row_split_keeps_copies_together_and_is_deterministic():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 5, (300, 3)).astype(float)  # 5**3 = 125 possible vectors: many copies
    groups = D.duplicate_groups(base)
    a = D.grouped_row_split(groups, (0.7, 0.15, 0.15), seed=7)
    b = D.grouped_row_split(groups, (0.7, 0.15, 0.15), seed=7)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    _assert_no_group_on_two_sides(groups, a)
    assert abs(len(a["test"]) - 45) <= 8 and abs(len(a["val"]) - 45) <= 8  # sized by rows
    c = D.grouped_row_split(groups, (0.7, 0.15, 0.15), seed=8)
    assert not np.array_equal(a["test"], c["test"])


def test_grouped_kfold_partitions_whole_groups():
    groups = np.repeat(np.arange(40), 3)
    folds = D.grouped_kfold(groups, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(120))
    sides = [set(groups[f].tolist()) for f in folds]
    assert all(not (sides[i] & sides[j]) for i in range(5) for j in range(i + 1, 5))
    assert all(len(f) == 24 for f in folds)


# ---------------------------------------------------------------- real data


def test_real_files_verify_and_parse(real_data_dir):
    w = D.load_wine(real_data_dir)
    assert w.x.shape == (4898, 10) and w.y.shape == (4898,)
    s = D.load_seizure(real_data_dir)
    assert s.x.shape == (11500, 178) and int(s.y.sum()) == 2300 and len(set(s.groups)) == 500
    m = D.load_mnist(real_data_dir)
    assert m.x_train.shape == (60000, 28, 28) and m.x_test.shape == (10000, 28, 28)
    assert np.bincount(m.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_wine_grouped_split_has_no_input_vector_on_two_sides(real_data_dir):
    from training import config as C

    w = D.load_wine(real_data_dir)
    cfg = C.load_config("wine")
    split = wine_recipe.split(cfg, w)
    _assert_no_group_on_two_sides(D.duplicate_groups(w.x), split)
    rows = [{tuple(r) for r in w.x[v].tolist()} for v in split.values()]
    assert not (rows[0] & rows[2]) and not (rows[1] & rows[2]) and not (rows[0] & rows[1])
    again = wine_recipe.split(cfg, w)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert [len(split[k]) for k in ("train", "val", "test")] == [3428, 734, 736]


def test_real_seizure_grouped_split_has_no_shared_recording(real_data_dir):
    s = D.load_seizure(real_data_dir)
    sp = D.grouped_split(s.groups, s.y, (0.8, 0.1, 0.1), 42)
    sides = [set(s.groups[v]) for v in sp.values()]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert [len(x) for x in sides] == [400, 50, 50]


def _register(monkeypatch, dataset, name, payload):
    spec = D.RemoteFile(dataset, name, hashlib.sha256(payload).hexdigest(), ())
    monkeypatch.setitem(D.FILES, name, spec)


def test_parse_wine_csv_selects_ten_inputs_and_alcohol(tmp_path, monkeypatch):
    header = (
        '"fixed acidity";"volatile acidity";"citric acid";"residual sugar";"chlorides";"free sulfur dioxide";'
        '"total sulfur dioxide";"density";"pH";"sulphates";"alcohol";"quality"\n'
    )
    payload = (
        header + "7;0.27;0.36;20.7;0.045;45;170;1.001;3;0.45;8.8;6\n"
        "6.3;0.3;0.34;1.6;0.049;14;132;0.994;3.3;0.49;9.5;6\n"
    ).encode()
    (tmp_path / "wine").mkdir()
    (tmp_path / "wine" / "winequality-white.csv").write_bytes(payload)
    _register(monkeypatch, "wine", "winequality-white.csv", payload)
    w = D.load_wine(tmp_path)
    np.testing.assert_allclose(w.x[0], [7, 0.27, 0.36, 20.7, 0.045, 45, 170, 1.001, 3, 0.45])
    np.testing.assert_allclose(w.y, [8.8, 9.5])


def test_parse_seizure_csv_binarises_and_groups(tmp_path, monkeypatch):
    cols = ",".join(f"X{i}" for i in range(1, 179))
    rows = [
        f"X{c}.V1.{r},{','.join(str(v) for v in range(178))},{y}"
        for c, r, y in ((1, 5, 1), (2, 5, 1), (1, 7, 3))
    ]
    payload = ("," + cols + ",y\n" + "\n".join(rows) + "\n").encode()
    (tmp_path / "seizure").mkdir()
    (tmp_path / "seizure" / "epileptic_seizure_recognition.csv.gz").write_bytes(gzip.compress(payload))
    _register(monkeypatch, "seizure", "epileptic_seizure_recognition.csv.gz", payload)
    s = D.load_seizure(tmp_path)
    assert s.x.shape == (3, 178) and s.y.tolist() == [1, 1, 0] and s.y5.tolist() == [1, 1, 3]
    assert s.groups.tolist() == ["V1.5", "V1.5", "V1.7"]


def test_parse_seizure_csv_with_wrong_columns_fails(tmp_path, monkeypatch):
    payload = b",X1,X2,y\nX1.V1,1,2,1\n"
    (tmp_path / "seizure").mkdir()
    (tmp_path / "seizure" / "epileptic_seizure_recognition.csv.gz").write_bytes(payload)
    _register(monkeypatch, "seizure", "epileptic_seizure_recognition.csv.gz", payload)
    with pytest.raises(D.DataError, match="X1..X178"):
        D.load_seizure(tmp_path)
