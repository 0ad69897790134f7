"""Every request shown in the docs, sent to a real Gunicorn server on the committed bundles.

The same samples and checks as tests/docs/test_samples.py, over real HTTP to the server
`make serve` starts (one worker on a free loopback port); also checks that the server logs
where its /docs page is.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import REPO_ROOT
from tests.docs import samples as S
from tests.docs.test_samples import SAMPLES, check


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "stderr.log"
    env = {**os.environ, "DLQR_BIND": f"127.0.0.1:{port}", "DLQR_WORKERS": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "serving/gunicorn.conf.py", "serving.wsgi:app"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"server not ready in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield base, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _send(base: str, sample: S.Sample) -> tuple[int, bytes]:
    req = urllib.request.Request(
        base + sample.path, data=sample.body, headers=sample.headers, method=sample.method
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_server_logs_the_url_of_its_docs_page(server):
    base, log = server
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(f"API docs at {base}/docs" in line.get("msg", "") for line in lines), lines[:5]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_sample_answer_matches_over_http(server, sample):
    check(sample, *_send(server[0], sample))
