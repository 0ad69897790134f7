"""The reliability scenarios of scripts/chaos.py, short versions, against real servers.

Each test prints the scenario's figures (``pytest -s`` shows them) and fails on
the scenario's own checks: any lost or 5xx answer for normal traffic, or a
hostile request not getting its documented answer. The long versions are
``make chaos``; the figures in docs/hardening.md come from those.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.reliability.conftest import chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def check(result) -> None:
    print(result.line())
    assert not result.failures, result.line()


def test_slow_header_and_body_clients(server):
    # 32 connections trickling their head and 32 their body, each replaced when dropped.
    check(chaos.scenario_slow_mixed(server, 32, 8, read_timeout=3))


def test_cpu_bomb_is_refused_from_the_image_headers(server):
    check(chaos.scenario_cpu_bomb(server, quick=True, limit=8 * 1024 * 1024))


def test_bad_framing_encodings_and_parser_errors_are_counted_problems(server):
    check(chaos.scenario_chunked(server))
    check(chaos.scenario_encoding(server))
    check(chaos.scenario_parser_errors(server))


def test_pipelined_requests_all_get_answers(server):
    check(chaos.scenario_pipeline(server))


def test_invented_methods_do_not_create_series(server):
    check(chaos.scenario_methods(server, 300))


def test_overload_is_shed_with_503(server):
    check(chaos.scenario_overload(server, 32, 5, inflight=4))


def test_no_control_socket_by_default(server):
    home = Path(server.env["HOME"])
    assert not list(home.rglob("*.ctl")) and "Control server error" not in server.log()


@pytest.fixture(scope="module")
def signals_server():
    srv = chaos.Server(
        REPO_ROOT, Path(tempfile.mkdtemp(prefix="dlqr-signals-")), {"DLQR_WORKERS": "2"}, "signals"
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_kill9_of_a_worker_under_load(signals_server):
    check(chaos.scenario_signal(signals_server, "kill9", 9))


def test_hup_under_load(signals_server):
    signals_server.wait_ready()
    check(chaos.scenario_signal(signals_server, "hup", 9))


def test_sigterm_under_load_drains(tmp_path):
    srv = chaos.Server(REPO_ROOT, tmp_path, {"DLQR_WORKERS": "2"}, "sigterm").start()
    try:
        check(chaos.scenario_signal(srv, "sigterm", 6))
    finally:
        srv.stop()


def test_refusals_that_leave_the_body_unread_close_the_connection(server):
    # 413 from Content-Length alone: the 9 MB are never sent, so the connection cannot be reused.
    head = b"POST /predict/wine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9000000\r\n\r\n"
    out = chaos.raw_exchange(server.port, head, timeout=5)
    assert chaos.status_lines(out) == [413] and b"Connection: close" in out and b"problem+json" in out
    # A keep-alive request after a read one is still served on the same connection.
    wine = chaos.example("wine.json")
    ok = b"POST /predict/wine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = chaos.raw_exchange(server.port, ok % (len(wine), wine) + last, timeout=5)
    assert chaos.status_lines(out) == [200, 200]
