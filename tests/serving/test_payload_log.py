"""The payload log (:mod:`serving.payload_log`): lines, sampling, redaction, rotation and drops."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from dlqr.card import get as get_card
from serving import payload_log as P
from serving.dataplane import Observation
from serving.settings import SettingsError
from tests.serving.bundles import sample_rows

CARDS = {n: get_card(n) for n in ("wine", "seizure", "digit")}


def obs(model: str = "wine", n: int = 2, rid: str = "r1") -> Observation:
    rows = sample_rows(model, n)
    out = np.full((n, get_card(model).output_dim), 0.25)
    return Observation(model, "v1", rows, out, [{"x": 1}] * n, 0.0042, 0.001, rid, "predict")


def test_a_line_holds_time_id_model_version_inputs_outputs_latency(tmp_path):
    log = P.PayloadLog(tmp_path, CARDS, hostname="h1")
    o = obs()
    log(o)
    log.join()
    (line,) = log.path.read_text().splitlines()
    rec = json.loads(line)
    assert log.path.name == f"payload-h1-{os.getpid()}.jsonl"
    assert rec["request_id"] == "r1" and rec["model"] == "wine" and rec["version"] == "v1"
    assert rec["latency_ms"] == 4.2 and rec["outputs"] == [[0.25], [0.25]]
    assert rec["time"].endswith("Z") and rec["door"] == "predict"
    assert rec["inputs"][0] == get_card("wine").instance_from_row(o.rows[0])
    log.close()


def test_redaction_hashes_or_drops_card_fields(tmp_path):
    rules = P.parse_redact("wine:ph=hash,*:density=drop", CARDS)
    log = P.PayloadLog(tmp_path, CARDS, redact=rules, hostname="h")
    o = obs()
    log(o)
    log.join()
    inst = json.loads(log.path.read_text())["inputs"][0]
    plain = get_card("wine").instance_from_row(o.rows[0])
    assert "density" not in inst and inst["ph"] == P.hash_value(plain["ph"]) != plain["ph"]
    assert inst["sulphates"] == plain["sulphates"]
    log.close()


@pytest.mark.parametrize("spec", ["wine:ph", "wine:ph=mask", "nosuch:ph=hash", "ph=hash"])
def test_bad_redaction_specs_are_refused(spec):
    with pytest.raises(P.RedactError):
        P.parse_redact(spec, CARDS)


def test_sampling_keeps_about_the_set_share(tmp_path):
    log = P.PayloadLog(tmp_path, CARDS, sample=0.25, rng=random.Random(0), hostname="h")
    for i in range(400):
        log(obs(n=1, rid=str(i)))
    log.join()
    assert 70 <= log.written <= 130
    log.close()


def test_rotation_keeps_every_file_within_the_limit_and_the_count(tmp_path):
    log = P.PayloadLog(tmp_path, CARDS, max_bytes=4096, max_files=3, hostname="h")
    for i in range(200):
        log(obs(n=1, rid=str(i)))
    log.join()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3 and all(f.stat().st_size <= 4096 for f in files)
    log.close()


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    log = P.PayloadLog(tmp_path, CARDS, queue_size=2, start=False, hostname="h")
    for i in range(5):
        log(obs(rid=str(i)))  # no writer yet: the third line on finds the queue full
    assert log.dropped["queue_full"] == 3
    log.start()
    log.join()
    assert log.written == 2
    log.close()


def test_a_failing_disk_drops_and_counts(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is needed to simulate a full disk")
    log = P.PayloadLog(tmp_path, CARDS, hostname="h")
    log.path.symlink_to("/dev/full")  # every write fails with ENOSPC
    for i in range(3):
        log(obs(rid=str(i)))
    log.join()
    assert log.dropped["write_error"] == 3 and log.written == 0
    log.close()


def test_enabled_without_a_directory_is_a_settings_error(make_app, artifacts):
    with pytest.raises(SettingsError, match="DLQR_PAYLOAD_LOG_DIR"):
        make_app(ARTIFACTS_DIR=artifacts, PAYLOAD_LOG_ENABLED=True)
    with pytest.raises(SettingsError, match="REDACT"):
        make_app(ARTIFACTS_DIR=artifacts, PAYLOAD_LOG_ENABLED=True, PAYLOAD_LOG_DIR="/tmp",
                 PAYLOAD_LOG_REDACT="wine:ph=mask")  # fmt: skip


def test_predict_requests_are_logged_with_their_request_id(make_app, artifacts, tmp_path):
    app = make_app(ARTIFACTS_DIR=artifacts, PAYLOAD_LOG_ENABLED=True, PAYLOAD_LOG_DIR=str(tmp_path))
    client = app.test_client()
    body = {"instances": [get_card("wine").instance_from_row(r) for r in sample_rows("wine", 3)]}
    r = client.post("/predict/wine", json=body, headers={"X-Request-ID": "abc123"})
    assert r.status_code == 200
    app.extensions["dlqr"].plane.hub.join()
    plog = app.extensions["dlqr_payload_log"]
    plog.join()
    rec = json.loads(plog.path.read_text().splitlines()[-1])
    assert rec["request_id"] == "abc123" and len(rec["inputs"]) == 3
    assert [p["alcohol"] for p in rec["predictions"]] == [p["alcohol"] for p in r.get_json()["predictions"]]
    text = client.get("/metrics").get_data(as_text=True)
    assert "dlqr_payload_log_written_total 1.0" in text
    plog.close()
