"""``python -m serving monitor report`` on payload logs of the real server and data.

The held-out test rows go through ``/predict`` with the payload log on; the report
with their labels must give what ``python -m training evaluate`` gives on those rows.
Bad input (a truncated line, labels of unknown request ids, an empty directory) is
named and left out. Skipped where the real data is absent.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from dlqr import repository
from dlqr.card import get as get_card
from serving import monitor_report as R
from tests.conftest import REPO_ROOT

ARTIFACTS = REPO_ROOT / "artifacts"
DATA = Path(os.environ.get("DLQR_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="real datasets not found (set DLQR_DATA_DIR)")
PER_REQUEST = 10


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """{model: (log dir, labels csv)} after the test rows of each model went through /predict."""
    from serving.app import create_app
    from tests.serving.test_monitor_real import held_out

    root = tmp_path_factory.mktemp("payload")
    logs = root / "logs"
    app = create_app({"ARTIFACTS_DIR": ARTIFACTS, "MODEL_LOADING": "sync", "VERSION_POLICY": "latest",
                      "PAYLOAD_LOG_ENABLED": True, "PAYLOAD_LOG_DIR": str(logs)})  # fmt: skip
    client = app.test_client()
    out = {}
    for name in ("wine", "seizure", "digit"):
        card = get_card(name)
        x, y = held_out(name)
        labels = root / f"{name}.csv"
        with open(labels, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["request_id", "index", "label"])
            for k in range(0, len(x), PER_REQUEST):
                rid = f"{name}-{k}"
                body = {"instances": [card.instance_from_row(r) for r in x[k : k + PER_REQUEST]]}
                r = client.post(f"/predict/{name}", json=body, headers={"X-Request-ID": rid})
                assert r.status_code == 200
                w.writerows([rid, i, v] for i, v in enumerate(y[k : k + PER_REQUEST]))
        out[name] = labels
    app.extensions["dlqr"].plane.hub.join()
    app.extensions["dlqr_payload_log"].join()
    return logs, out


@pytest.mark.parametrize("name", ["wine", "seizure", "digit"])
def test_report_with_labels_equals_training_evaluate(logged, name, tmp_path):
    from training import evaluate_bundle

    logs, labels = logged
    res = R.report(name, logs, tmp_path, labels=labels[name], artifacts=ARTIFACTS)
    ev = evaluate_bundle.recompute(name, repository.latest_dir(ARTIFACTS / name), DATA)
    assert res["live"]["rows"] == ev["n_test"]
    for k, v in ev["metrics"].items():
        # The service's outputs are ONNX Runtime's (within 1e-5 of Keras'): MAE and accuracy
        # agree to 1e-6; ROC AUC ranks the probabilities, and near-equal ones (saturated at 1.0
        # in float32) can tie in one runtime and not the other, so it agrees to 1e-4.
        assert res["live"][k] == pytest.approx(v["recomputed"], abs=1e-4 if k == "roc_auc" else 1e-6), k
    print(
        f"{name}: report {res['live']} / evaluate { ({k: v['recomputed'] for k, v in ev['metrics'].items()}) }"
    )
    assert (tmp_path / "index.html").is_file() and (tmp_path / "live_quality.png").is_file()
    assert not res["problems"]


def test_bad_input_is_named_and_the_good_lines_still_count(logged, tmp_path):
    logs, labels = logged
    bad_logs = tmp_path / "logs"
    bad_logs.mkdir()
    for f in logs.iterdir():
        (bad_logs / f.name).write_bytes(f.read_bytes())
    victim = sorted(bad_logs.iterdir())[0]
    with open(victim, "a", encoding="utf-8") as fh:
        fh.write('{"time": "2026-12-04T10:00:00Z", "model": "wine", "inp')  # a write cut by a full disk
    bad_labels = tmp_path / "labels.csv"
    text = labels["wine"].read_text()
    bad_labels.write_text(text + "nosuch-request,0,10.5\nwine-0,0,not-a-number\n")
    res = R.report("wine", bad_logs, tmp_path / "out", labels=bad_labels, artifacts=ARTIFACTS)
    joined = "\n".join(res["problems"])
    assert f"1 unreadable lines (truncated or not a payload record) left out (e.g. {victim.name}:" in joined
    assert "1 labels with request ids not in the logs left out (e.g. labels.csv:" in joined
    assert "nosuch-request" in joined and "1 unreadable label lines" in joined
    assert res["rows"] == res["live"]["rows"] == len(text.splitlines()) - 1  # every good row reported
    assert "Left out" in (tmp_path / "out" / "index.html").read_text()


def test_an_empty_log_directory_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = R.main(["report", "wine", "--logs", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no payload log files (payload-*.jsonl*) in it" in capsys.readouterr().err


def test_redacted_instances_are_counted_not_fatal(tmp_path):
    from serving import payload_log as P
    from serving.dataplane import Observation

    card = get_card("wine")
    plog = P.PayloadLog(tmp_path / "logs", {"wine": card}, redact={("wine", "ph"): "drop"}, hostname="h")
    latest = repository.latest_dir(ARTIFACTS / "wine").name
    plog(Observation("wine", latest, np.full((2, 10), 1.0), np.zeros((2, 1)), [], 0, 0, "r", "predict"))
    plog.close()
    with pytest.raises(R.ReportError, match="no usable instance"):
        R.report("wine", tmp_path / "logs", tmp_path / "o", artifacts=ARTIFACTS)
