"""Offline scoring (``python -m serving predict``): same answers as the server, input order, the
version column, bad rows (line and field; nothing written by default; --skip-invalid), images,
and the real test splits scored exactly as /predict scores them."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from pydantic import TypeAdapter

from dlqr import repository
from dlqr.card import get as get_card
from serving import offline
from tests.conftest import REPO_ROOT

MODELS = ("wine", "seizure", "digit")


def _load(artifacts, name):
    return offline.load(name, artifacts)


def _server_predictions(client, name, instances, batch=256):
    out = []
    for i in range(0, len(instances), batch):
        r = client.post(f"/predict/{name}", json={"instances": instances[i : i + batch]})
        assert r.status_code == 200, r.get_data(as_text=True)[:500]
        out += r.get_json()["predictions"]
    return out


def _write_jsonl(path, instances):
    path.write_text("".join(json.dumps(i) + "\n" for i in instances))


def _write_csv(path, name, instances, shuffle_columns=False):
    card = get_card(name)
    adapter = TypeAdapter(card.instance)
    rows = card.rows([adapter.validate_python(i) for i in instances], card.features)
    cols = list(card.features)[::-1] if shuffle_columns else list(card.features)
    idx = [card.features.index(c) for c in cols]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow([int(r[j]) if float(r[j]).is_integer() else repr(float(r[j])) for j in idx])


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _preds_from_csv(path, name):
    card = get_card(name)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        pred = {}
        for key in card.task.output_keys():
            if key in row:
                v = row[key]
                pred[key] = (
                    v == "true"
                    if v in ("true", "false")
                    else (int(v) if v.lstrip("-").isdigit() else float(v))
                )
            else:
                pred[key] = [float(row[c]) for c in row if c.startswith(f"{key}_")]
        out.append((row["input"], row["version"], pred))
    return out


@pytest.mark.parametrize("name", MODELS)
def test_jsonl_and_csv_give_the_servers_predictions_in_input_order(
    app, client, golden, artifacts, tmp_path, name
):
    instances = [g["input"] for g in golden[name]] * 3
    want = _server_predictions(client, name, instances)
    model, ctx = _load(artifacts, name)
    _write_jsonl(tmp_path / "in.jsonl", instances)
    res = offline.score(
        model, ctx, tmp_path / "in.jsonl", tmp_path / "out.jsonl", batch_size=5, progress=False
    )
    assert (res.rows, res.scored, res.invalid) == (len(instances), len(instances), 0)
    got = _read_jsonl(tmp_path / "out.jsonl")
    assert [r["input"] for r in got] == [str(i) for i in range(1, len(instances) + 1)]
    assert {r["version"] for r in got} == {model.version}
    assert [{k: v for k, v in r.items() if k not in ("input", "version")} for r in got] == want
    _write_csv(tmp_path / "in.csv", name, instances, shuffle_columns=True)
    offline.score(model, ctx, tmp_path / "in.csv", tmp_path / "out.csv", batch_size=4, progress=False)
    rows = _preds_from_csv(tmp_path / "out.csv", name)
    assert [r[0] for r in rows] == [str(i) for i in range(2, len(instances) + 2)]  # file lines, header = 1
    for (_, version, pred), w in zip(rows, want, strict=True):
        assert version == model.version and pred == w


def test_bad_rows_fail_the_run_with_line_and_field_and_write_nothing(artifacts, golden, tmp_path):
    model, ctx = _load(artifacts, "wine")
    good = golden["wine"][0]["input"]
    instances = [good, dict(good, ph=15.0), good, dict(good, density=0)]
    _write_jsonl(tmp_path / "in.jsonl", instances)
    out = tmp_path / "out.csv"
    with pytest.raises(offline.InvalidRows) as exc:
        offline.score(model, ctx, tmp_path / "in.jsonl", out, progress=False)
    assert exc.value.count == 2 and exc.value.total == 4
    assert exc.value.errors[0].startswith("in.jsonl:2: field ph: ") and "14" in exc.value.errors[0]
    assert exc.value.errors[1].startswith("in.jsonl:4: field density: ")
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "in.jsonl"]  # no temp file left

    res = offline.score(model, ctx, tmp_path / "in.jsonl", out, skip_invalid=True, progress=False)
    assert (res.scored, res.invalid) == (2, 2)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["error"] for r in rows][1].startswith("field ph:") and rows[0]["error"] == ""
    assert rows[1]["alcohol"] == "" and float(rows[2]["alcohol"]) > 0


def test_a_jsonl_line_with_two_objects_is_one_bad_input(artifacts, golden, tmp_path):
    model, ctx = _load(artifacts, "wine")
    good = json.dumps(golden["wine"][0]["input"])
    (tmp_path / "in.jsonl").write_text(f"{good}\n{good},{good}\n{good}\n")
    res = offline.score(
        model, ctx, tmp_path / "in.jsonl", tmp_path / "out.jsonl", skip_invalid=True, progress=False
    )
    assert (res.rows, res.scored, res.invalid) == (3, 2, 1)
    got = _read_jsonl(tmp_path / "out.jsonl")
    assert [r["input"] for r in got] == ["1", "2", "3"] and got[1]["error"].startswith("not valid JSON")


def test_csv_problems_are_reported_by_line_and_field(artifacts, golden, tmp_path):
    model, ctx = _load(artifacts, "wine")
    _write_csv(tmp_path / "in.csv", "wine", [golden["wine"][0]["input"]] * 3)
    lines = (tmp_path / "in.csv").read_text().splitlines()
    lines[2] = "abc" + lines[2][lines[2].index(",") :]  # line 3, first column (fixed_acidity)
    lines[3] = lines[3].rsplit(",", 1)[0]  # line 4: one field short
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(offline.InvalidRows) as exc:
        offline.score(model, ctx, tmp_path / "in.csv", tmp_path / "out.jsonl", progress=False)
    assert exc.value.errors == [
        "in.csv:3: field fixed_acidity: 'abc' is not a number",
        "in.csv:4: 9 fields, the header has 10",
    ]
    (tmp_path / "h.csv").write_text("fixed_acidity,pH\n1,2\n")
    with pytest.raises(offline.InputError, match=r"line 1 \(header\): missing volatile_acidity.*unknown pH"):
        offline.score(model, ctx, tmp_path / "h.csv", tmp_path / "out.jsonl", progress=False)


def test_integer_inputs_refuse_fractions_in_csv(artifacts, golden, tmp_path):
    model, ctx = _load(artifacts, "digit")
    _write_csv(tmp_path / "in.csv", "digit", [golden["digit"][0]["input"]])
    text = (tmp_path / "in.csv").read_text().splitlines()
    text[1] = "0.5" + text[1][text[1].index(",") :]
    (tmp_path / "in.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(offline.InvalidRows) as exc:
        offline.score(model, ctx, tmp_path / "in.csv", tmp_path / "out.jsonl", progress=False)
    assert exc.value.errors == ["in.csv:2: field px0: '0.5' is not an integer"]


def test_a_directory_of_images_is_scored_like_raw_image_bodies(client, artifacts, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    images = tmp_path / "images"
    images.mkdir()
    bodies = {}
    for i, (ext, fmt) in enumerate([("png", "PNG"), ("jpg", "JPEG"), ("png", "PNG")]):
        arr = np.zeros((40, 30), np.uint8)
        arr[8 + i : 30, 10:20] = rng.integers(120, 255, size=(22 - i, 10))
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt)
        name = f"img{i}.{ext}"
        (images / name).write_bytes(buf.getvalue())
        bodies[name] = (buf.getvalue(), f"image/{'jpeg' if ext == 'jpg' else 'png'}")
    (images / "notes.txt").write_text("not an image")
    model, ctx = _load(artifacts, "digit")
    # A file that is not an image (a README, notes) is no input: skipped and counted, the run succeeds.
    res = offline.score(model, ctx, images, tmp_path / "out.jsonl", progress=False)
    assert (res.rows, res.scored, res.invalid, res.skipped) == (3, 3, 0, 1)
    got = _read_jsonl(tmp_path / "out.jsonl")
    assert [r["input"] for r in got] == ["img0.png", "img1.jpg", "img2.png"]
    for rec in got[:3]:
        data, ctype = bodies[rec["input"]]
        want = client.post("/predict/digit", data=data, content_type=ctype).get_json()["predictions"][0]
        assert {k: rec[k] for k in want} == want
        b64 = client.post("/predict/digit", json={"image": base64.b64encode(data).decode()}).get_json()
        assert b64["predictions"][0] == want


def test_cli_writes_the_output_and_a_summary_and_fails_with_exit_1_on_bad_rows(artifacts, golden, tmp_path):
    _write_jsonl(tmp_path / "in.jsonl", [g["input"] for g in golden["seizure"]])
    cmd = [sys.executable, "-m", "serving", "predict", "seizure", "--artifacts", str(artifacts),
           "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.csv")]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{len(golden['seizure'])} of {len(golden['seizure'])} inputs scored" in r.stderr
    assert "rows/s" in r.stderr and "[####" in r.stderr  # progress bar, on stderr
    header = (tmp_path / "out.csv").read_text().splitlines()[0]
    assert header == "input,version,probability,seizure,threshold"
    (tmp_path / "in.jsonl").write_text('{"eeg": [1, 2]}\n')
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "in.jsonl:1: field eeg: List should have at least 178 items" in r.stderr
    assert "nothing was written" in r.stderr


# ----------------------------------------------------------- real test splits (slow)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_offline_reproduces_the_server_on_every_row_of_the_real_test_split(
    real_data_dir, make_app, tmp_path, name
):
    from training import evaluate_bundle
    from training import train as T

    artifacts = REPO_ROOT / "artifacts"
    bundle = repository.latest_dir(artifacts / name)
    prep = json.loads((bundle / "preprocessing.json").read_text())
    ids = json.loads((bundle / "test_split.json").read_text())["test_ids"]
    raw, _ = evaluate_bundle.test_rows(name, ids, T.load_dataset(name, real_data_dir))
    card = get_card(name)
    instances = [card.instance_from_row(row, prep["features"]) for row in raw]
    client = make_app(ARTIFACTS_DIR=artifacts, MODELS=(name,)).test_client()
    want = _server_predictions(client, name, instances)
    model, ctx = _load(artifacts, name)
    _write_jsonl(tmp_path / "test.jsonl", instances)
    res = offline.score(model, ctx, tmp_path / "test.jsonl", tmp_path / "out.jsonl", progress=False)
    assert res.scored == len(ids) == len(want)
    got = _read_jsonl(tmp_path / "out.jsonl")
    assert [{k: v for k, v in r.items() if k not in ("input", "version")} for r in got] == want
    _write_csv(tmp_path / "test.csv", name, instances)
    offline.score(model, ctx, tmp_path / "test.csv", tmp_path / "out.csv", progress=False)
    assert [p for _, _, p in _preds_from_csv(tmp_path / "out.csv", name)] == want


@pytest.mark.parametrize(
    "prefix", [[], ["predict"]], ids=["dlqr-predict MODEL", "dlqr-predict predict MODEL"]
)
def test_cli_takes_the_model_first_and_the_old_predict_form(prefix, artifacts, golden, tmp_path, capsys):
    _write_jsonl(tmp_path / "in.jsonl", [g["input"] for g in golden["wine"]])
    out = tmp_path / "out.jsonl"
    argv = [
        *prefix,
        "wine",
        "--artifacts",
        str(artifacts),
        "-i",
        str(tmp_path / "in.jsonl"),
        "-o",
        str(out),
        "-q",
    ]
    assert offline.main(argv) == 0, capsys.readouterr().err
    assert len(_read_jsonl(out)) == len(golden["wine"])
    assert offline.command_line(["--help"]) == ["--help"]  # options are never taken for a model


def test_cli_counts_skipped_files_and_refuses_an_unknown_version(artifacts, tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    arr = np.zeros((28, 28), np.uint8)
    arr[6:22, 12:16] = 200  # a stroke: a blank image is refused
    Image.fromarray(arr).save(images / "a.png")
    (images / "README.md").write_text("# scans\n")
    out = tmp_path / "out.csv"
    argv = ["digit", "--artifacts", str(artifacts), "-i", str(images), "-o", str(out), "-q"]
    assert offline.main(argv) == 0
    err = capsys.readouterr().err
    assert "skipped: 1 files" in err and "1 of 1 inputs scored, 0 invalid, 1 files skipped" in err
    assert offline.main([*argv, "--version", "9.9"]) == 2
    assert "error: model digit has no version '9.9'" in capsys.readouterr().err
