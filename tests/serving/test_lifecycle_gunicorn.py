"""Canary, routing keys, shadow and a hand-corrupted routing file on the real Gunicorn server.

One server (2 gevent workers, ``DLQR_POLL_SECONDS=0.5``) over a private copy of the committed
``artifacts/`` (real bundles), with routing files written through :mod:`dlqr.routing`:

- wine: stable = the older version, canary = the newer at 10 %;
- seizure: stable = the newer version; a crafted version (the same network at another
  threshold) is added as the shadow half-way;
- digit: stable = the older version, then its routing file is corrupted by hand.
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from dlqr import repository
from dlqr import routing as R
from tests.conftest import REPO_ROOT
from tests.serving.test_canary_shadow import with_threshold
from tests.serving.test_versions import chaos_swap

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SHADOW = "9999.01.01.000000"  # the crafted seizure version
SHADOW_THRESHOLD = 0.3


def _versions(model: str) -> list[str]:
    return [c.version for c in repository.scan(REPO_ROOT / "artifacts" / model) if not c.flat]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("lifecycle")
    art = work / "artifacts"
    shutil.copytree(REPO_ROOT / "artifacts", art, ignore=shutil.ignore_patterns(".*"))
    wine_new, wine_old = _versions("wine")[:2]
    digit_old = _versions("digit")[1]
    seizure_stable = _versions("seizure")[0]
    R.write(art / "wine", R.Routing(stable=wine_old, canary=R.Split(version=wine_new, percent=10)))
    R.write(art / "seizure", R.Routing(stable=seizure_stable))
    R.write(art / "digit", R.Routing(stable=digit_old))
    with_threshold(art / "seizure" / seizure_stable, art / "seizure", SHADOW, SHADOW_THRESHOLD)
    srv = chaos_swap.Server(art, work, workers=2, poll=0.5)
    srv.start(timeout=120)
    srv.art = art
    srv.wine = (wine_old, wine_new)
    srv.seizure_stable = seizure_stable
    srv.digit_old = digit_old
    try:
        yield srv
    finally:
        srv.stop()


def _golden(art: Path, model: str, version: str) -> list[dict]:
    return json.loads((art / model / version / "manifest.json").read_text())["golden"]


class Client:
    """One keep-alive connection."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes, headers: dict | None = None) -> tuple[int, str | None, bytes]:
        self.conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        r = self.conn.getresponse()
        return r.status, r.getheader("X-Model-Version"), r.read()

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        return r.status, r.read()


def _parallel(port: int, jobs: list, fn, threads: int = 4) -> list:
    """``fn(client, job)`` for every job, over ``threads`` keep-alive connections; results in order."""
    out: list = [None] * len(jobs)

    def work(k: int) -> None:
        c = Client(port)
        for i in range(k, len(jobs), threads):
            out[i] = fn(c, jobs[i])

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    return out


def _metric(port: int, name: str, **labels: str) -> float:
    _, body = Client(port).get("/metrics")
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_events(srv, event: str, model: str, n: int, since: int = 0, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in srv.events(event) if e.get("model") == model][since:]
        if len(found) >= n:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{n} {event} events for {model} not logged in {timeout}s")


def test_canary_share_of_2000_requests_lies_in_the_binomial_interval(server):
    old, new = server.wine
    body = json.dumps(_golden(server.art, "wine", old)[0]["input"]).encode()
    got = _parallel(server.port, list(range(2000)), lambda c, _: c.post("/predict/wine", body))
    assert all(status == 200 for status, _, _ in got)
    assert all(json.loads(b)["version"] == v for _, v, b in got)  # header and body agree
    versions = [v for _, v, _ in got]
    assert set(versions) <= {old, new}
    hits = versions.count(new)
    low, high = binomtest(hits, 2000, 0.10).proportion_ci(confidence_level=0.999)
    print(f"canary share: {hits} of 2000 ({hits / 20:.2f} %), 99.9 % interval [{low:.4f}, {high:.4f}]")
    assert low <= 0.10 <= high, (hits, low, high)
    assert _metric(server.port, "dlqr_model_version_requests_total", model="wine", version=new) >= hits


def test_the_same_routing_key_always_gets_the_same_version_on_every_worker(server):
    old, new = server.wine
    body = json.dumps(_golden(server.art, "wine", old)[0]["input"]).encode()
    keys = [f"user-{i}" for i in range(200)]
    jobs = [k for k in keys for _ in range(5)]
    got = _parallel(server.port, jobs, lambda c, k: (k, c.post("/predict/wine", body, {"X-Routing-Key": k})))
    per_key: dict[str, set] = {}
    for key, (status, version, _) in got:
        assert status == 200
        per_key.setdefault(key, set()).add(version)
    assert all(len(v) == 1 for v in per_key.values())
    on_canary = sum(v == {new} for v in per_key.values())
    assert 0 < on_canary < 60  # about 10 % of 200 keys


def test_shadow_answers_are_byte_identical_and_disagreement_is_measured(server):
    stable = server.seizure_stable
    golden = _golden(server.art, "seizure", stable)
    # golden inputs plus points on the line from a negative to a positive one, so that some
    # probabilities fall between the two thresholds
    instances = [g["input"] for g in golden]
    neg = np.asarray(next(g["input"]["eeg"] for g in golden if not g["prediction"]["seizure"]), float)
    pos = np.asarray(next(g["input"]["eeg"] for g in golden if g["prediction"]["seizure"]), float)
    for a in np.linspace(0, 1, 400):
        instances.append({"eeg": np.rint((1 - a) * neg + a * pos).astype(int).tolist()})
    bodies = [json.dumps(i).encode() for i in instances]
    post = lambda c, b: c.post("/predict/seizure", b)  # noqa: E731
    before = _parallel(server.port, bodies, post)
    assert all(s == 200 and v == stable for s, v, _ in before)
    applied = len([e for e in server.events("routing_applied") if e.get("model") == "seizure"])
    R.write(server.art / "seizure", R.Routing(stable=stable, shadow=R.Split(version=SHADOW, percent=100)))
    events = _wait_events(server, "routing_applied", "seizure", 2, since=applied)
    assert len({e["pid"] for e in events}) == 2  # both workers applied the shadow
    labels = {"model": "seizure", "version": SHADOW, "against": stable}
    scored0 = _metric(server.port, "dlqr_shadow_rows_total", **labels)
    flips0 = _metric(server.port, "dlqr_shadow_disagreements_total", **labels)
    after = _parallel(server.port, bodies, post)
    assert [b for _, _, b in after] == [b for _, _, b in before]  # byte-identical answers
    deadline = time.monotonic() + 20
    while _metric(server.port, "dlqr_shadow_rows_total", **labels) - scored0 < len(bodies):
        assert time.monotonic() < deadline, "the shadow did not score every request"
        time.sleep(0.2)
    t_stable = json.loads(before[0][2])["predictions"][0]["threshold"]
    probs = [json.loads(b)["predictions"][0]["probability"] for _, _, b in after]
    flips = sum((p >= t_stable) != (p >= SHADOW_THRESHOLD) for p in probs)
    print(f"shadow: {len(bodies)} requests, {flips} decision flips between thresholds {t_stable:.4f} and "
          f"{SHADOW_THRESHOLD}")  # fmt: skip
    assert flips > 0, "the crafted rows must include some between the thresholds"
    assert _metric(server.port, "dlqr_shadow_disagreements_total", **labels) - flips0 == flips
    # the same network: every |p - p_shadow| is 0, in the first bucket
    assert _metric(server.port, "dlqr_shadow_probability_difference_bucket", le="0.001", **labels) >= len(
        bodies
    )
    assert _metric(server.port, "dlqr_shadow_requests_total", outcome="failed", **labels) == 0
    assert _metric(server.port, "dlqr_shadow_requests_total", outcome="scored", **labels) >= len(bodies)
    assert _metric(server.port, "dlqr_shadow_latency_seconds_count", **labels) >= 1  # one per stacked run


def test_a_routing_file_corrupted_by_hand_keeps_the_last_good_routing_in_every_worker(server):
    refused = len([e for e in server.events("routing_refused") if e.get("model") == "digit"])
    (server.art / "digit" / R.ROUTING_FILE).write_text('{"stable": "2026.11.27.185540", "canary": ')
    events = _wait_events(server, "routing_refused", "digit", 2, since=refused)
    assert len({e["pid"] for e in events}) == 2  # both workers refused it
    body = json.dumps(
        {"instances": [g["input"] for g in _golden(server.art, "digit", server.digit_old)]}
    ).encode()
    got = _parallel(server.port, list(range(100)), lambda c, _: c.post("/predict/digit", body))
    assert {(s, v) for s, v, _ in got} == {(200, server.digit_old)}  # not the greatest version
    assert _metric(server.port, "dlqr_routing_invalid", model="digit") == 1
    status, ready = Client(server.port).get("/readyz")
    detail = json.loads(ready)["models"]["digit"]
    assert "routing.json: not JSON" in detail["routing_error"] and detail["routing"] == {
        "stable": server.digit_old
    }
