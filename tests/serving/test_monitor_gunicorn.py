"""Drift monitor and payload log under a real Gunicorn with 2 workers (the gunicorn lane).

- The drift bin counters of both workers sum, in ``/metrics``, to the rows sent.
- ``hey -c 16`` with the payload log at 100 %: no request fails; rotation keeps every
  file within its size and count; on a full disk (a small tmpfs, mounted when running
  as root) lines are dropped and counted, and still no request fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dlqr import repository
from dlqr.card import get as get_card
from tests.conftest import REPO_ROOT
from tests.serving.bundles import sample_rows
from tests.serving.test_gunicorn import Server, call, metric, post

ARTIFACTS = REPO_ROOT / "artifacts"
pytestmark = pytest.mark.skipif(repository.latest_dir(ARTIFACTS / "wine") is None, reason="no committed wine")


def scrape(port: int) -> str:
    return call(port, "GET", "/metrics")[2].decode()


def test_bin_counters_of_two_workers_sum_to_the_rows_sent(tmp_path):
    srv = Server(tmp_path, ARTIFACTS, workers=2, prom_dir=tmp_path / "prom",
                 env={"DLQR_MODELS": "wine", "DLQR_MONITOR_WINDOW_SECONDS": "1"}).start()  # fmt: skip
    try:
        card = get_card("wine")
        rows = sample_rows("wine", 3 * 40)
        for i in range(40):  # a fresh connection each: both workers take some
            body = {"instances": [card.instance_from_row(r) for r in rows[3 * i : 3 * i + 3]]}
            assert post(srv.port, "/predict/wine", body)[0] == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # each worker flushes its counters every second
            text = scrape(srv.port)
            if metric(text, "dlqr_drift_rows_total", model="wine") >= 120:
                break
            time.sleep(0.5)
        assert metric(text, "dlqr_drift_rows_total", model="wine") == 120
        for feature in (*card.features, "prediction"):
            assert metric(text, "dlqr_drift_bin_total", model="wine", feature=feature) == 120, feature
        pids = {r["pid"] for r in srv.lines() if r.get("event") == "request" and r.get("model") == "wine"}
        assert len(pids) == 2, "both workers should have answered"
    finally:
        srv.stop()


def hey(port: int, body: Path, n: int) -> dict[str, int]:
    """Status code -> count of ``hey -n N -c 16`` POSTs of ``body`` to /predict/wine (N a multiple of 16)."""
    out = subprocess.run(["hey", "-n", str(n), "-c", "16", "-m", "POST", "-T", "application/json",
                          "-D", str(body), f"http://127.0.0.1:{port}/predict/wine"],
                         capture_output=True, text=True, timeout=300, check=True).stdout  # fmt: skip
    codes = {int(c): int(k) for c, k in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    if sum(codes.values()) != n:
        print(out)
    return codes


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size (root only; skipped elsewhere)."""
    mounted = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs{len(mounted)}"
        path.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for p in mounted:
        subprocess.run(["umount", str(p)], check=False)


needs_hey = pytest.mark.skipif(shutil.which("hey") is None, reason="hey is not installed")


def payload_server(tmp_path: Path, logdir: Path, **env: str) -> Server:
    return Server(tmp_path, ARTIFACTS, workers=2, prom_dir=tmp_path / "prom",
                  env={"DLQR_MODELS": "wine", "DLQR_PAYLOAD_LOG_ENABLED": "true", "DLQR_PAYLOAD_LOG_DIR": str(logdir),
                       "DLQR_LOG_LEVEL": "WARNING", **env}).start()  # fmt: skip


def wine_body(tmp_path: Path) -> Path:
    body = tmp_path / "body.json"
    body.write_text(
        json.dumps({"instances": [get_card("wine").instance_from_row(sample_rows("wine", 1)[0])]})
    )
    return body


def wait_settled(port: int, n: int) -> tuple[float, float]:
    """(written, dropped) once every one of the n lines is accounted for (or after 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        text = scrape(port)
        written, dropped = (
            metric(text, "dlqr_payload_log_written_total"),
            metric(text, "dlqr_payload_log_dropped_total"),
        )
        if written + dropped >= n or time.monotonic() > deadline:
            return written, dropped
        time.sleep(0.5)


@needs_hey
def test_hey_16_with_rotation_keeps_files_within_limits(tmp_path, tmpfs):
    logdir = tmpfs("8m")
    srv = payload_server(tmp_path, logdir, DLQR_PAYLOAD_LOG_MAX_BYTES="65536", DLQR_PAYLOAD_LOG_MAX_FILES="3")
    try:
        codes = hey(srv.port, wine_body(tmp_path), 3200)
        assert codes == {200: 3200}
        written, dropped = wait_settled(srv.port, 3200)
        assert written + dropped == 3200 and dropped == 0
    finally:
        srv.stop()
    files = sorted(logdir.iterdir())
    stems = {f.name.split(".jsonl")[0] for f in files}
    assert len(stems) == 2 and all(s.startswith(f"payload-{os.uname().nodename}-") for s in stems)
    assert all(f.stat().st_size <= 65536 for f in files)
    assert all(sum(f.name.startswith(s) for f in files) <= 3 for s in stems)
    print(f"rotation: {len(files)} files, largest {max(f.stat().st_size for f in files)} bytes")


@needs_hey
def test_hey_16_on_a_full_disk_drops_and_counts_and_no_request_fails(tmp_path, tmpfs):
    logdir = tmpfs("64k")
    srv = payload_server(tmp_path, logdir)
    try:
        codes = hey(srv.port, wine_body(tmp_path), 2000)
        assert codes == {200: 2000}
        written, dropped = wait_settled(srv.port, 2000)
        text = scrape(srv.port)
        assert dropped > 0 and metric(text, "dlqr_payload_log_dropped_total", reason="write_error") > 0
        assert written + dropped == 2000
        print(f"full disk: {written:.0f} lines written, {dropped:.0f} dropped and counted")
        assert post(srv.port, "/predict/wine", json.loads(wine_body(tmp_path).read_text()))[0] == 200
    finally:
        srv.stop()
