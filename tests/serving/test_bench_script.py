"""scripts/bench.py's arithmetic: CPU per request and the goal lines it prints (no servers started)."""

from __future__ import annotations

import importlib.util
import os

from tests.conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location("bench", REPO_ROOT / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _run(server: str, workload: str, rps: float, worker: float, hey: float) -> dict:
    return {
        "server": server,
        "model": "digit",
        "workload": workload,
        "c": 8,
        "rows": 1 if workload == "single" else 256,
        "rps": rps,
        "p50_ms": 1.0,
        "p99_ms": 5.0,
        "codes": {200: 100},
        "worker_cpu_ms": worker,
        "hey_cpu_ms": hey,
    }


def test_cpu_seconds_counts_this_process_and_skips_vanished_pids():
    sum(i * i for i in range(200_000))  # some CPU of our own
    mine = bench.cpu_seconds([os.getpid()])
    assert mine > 0
    assert bench.cpu_seconds([os.getpid(), 2**22 + 12345]) >= mine  # a pid that does not exist


def _results(runs: list[dict]) -> dict:
    """What bench.render reads: a placeholder machine and the given runs."""
    machine = [
        "cpu",
        "cores",
        "mem_gib",
        "os",
        "python",
        "numpy",
        "onnxruntime",
        "tensorflow",
        "keras",
        "flask",
        "gunicorn",
    ]
    return {
        "machine": dict.fromkeys(machine, "x"),
        "workers": 2,
        "duration_s": 2,
        "loadavg_start": (0.0, 0.0, 0.0),
        "loadavg_end": (1.0, 0.0, 0.0),
        "servers": {},
        "runs": runs,
    }


def test_goal_lines_show_where_the_ratio_comes_from():
    results = _results(
        [
            _run("service", "single", 600.0, 2.5, 0.3),
            _run("floor", "single", 1800.0, 0.8, 0.2),
            _run("service", "batch256", 60.0, 30.0, 2.0),
            _run("floor", "batch256", 70.0, 26.0, 2.0),
        ]
    )
    text = bench.render(results, ("digit",), ["service", "floor"])
    # (0.8 + 0.2) / (2.5 + 0.3) = 36 % by CPU
    assert "digit single c=8: 33% of floor req/s, 36% by CPU per request (goal >= 80%: NOT met)" in text
    assert "worker CPU per request service 2.50 ms, floor 0.80 ms (hey 0.30 / 0.20 ms)" in text
    assert "could use about 0.95 ms" in text  # (0.8 + 0.2) / 0.8 - 0.3
    # 60 / 70 = 86 % by req/s but (26 + 2) / (30 + 2) = 88 %: both reach the goal
    assert "digit 256-row batches c=8: 86% of floor rows/s, 88% by CPU per request (goal >= 80%: met)" in text
    assert "could use about 33.00 ms" in text  # (26 + 2) / 0.8 - 2


def test_a_disturbed_floor_round_cannot_meet_the_goal_alone():
    """req/s says 104 % (a slow floor round), CPU per request says 76 %: the goal is not met."""
    results = _results(
        [_run("service", "batch256", 52.0, 35.88, 1.24), _run("floor", "batch256", 50.0, 27.12, 1.26)]
    )
    text = bench.render(results, ("digit",), ["service", "floor"])
    assert (
        "digit 256-row batches c=8: 104% of floor rows/s, 76% by CPU per request (goal >= 80%: NOT met)"
        in text
    )
    without_cpu = [{k: v for k, v in r.items() if not k.endswith("_cpu_ms")} for r in results["runs"]]
    text = bench.render({**results, "runs": without_cpu}, ("digit",), ["service", "floor"])
    assert (
        "digit 256-row batches c=8: 104% of floor rows/s (goal >= 80%: met)" in text
    )  # nothing to contradict it
    assert "worker CPU" not in text


def test_median_run_keeps_cpu_figures_only_when_every_round_has_them():
    a, b = _run("floor", "single", 1.0, 1.0, 0.1), _run("floor", "single", 3.0, 3.0, 0.3)
    c = _run("floor", "single", 2.0, 2.0, 0.2)
    assert bench.median_run([a, b, c])["worker_cpu_ms"] == 2.0
    del c["worker_cpu_ms"]
    assert "worker_cpu_ms" not in bench.median_run([a, b, c])


def test_connection_split_counts_each_listening_process_connections():
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    accepted = [listener.accept()[0] for _ in range(3)]
    try:
        # This process listens and holds the 3 accepted ends (and the 3 client ends, whose local
        # port is not the listener's): one worker holding 3 connections.
        assert bench.connection_split([os.getpid()], port) == [3]
        # A process that does not listen on the port is no worker: left out.
        assert bench.connection_split([os.getppid()], port) == []
    finally:
        for s in clients + accepted + [listener]:
            s.close()


def test_batch_stats_mean_rows_between_scrapes():
    before = (
        'dlqr_model_batch_rows_sum{model="digit"} 100.0\ndlqr_model_batch_rows_count{model="digit"} 20.0\n'
    )
    before += 'dlqr_model_batch_requests_sum{model="digit"} 100.0\ndlqr_model_batch_requests_count{model="digit"} 20.0\n'
    after = (
        'dlqr_model_batch_rows_sum{model="digit"} 1100.0\ndlqr_model_batch_rows_count{model="digit"} 120.0\n'
    )
    after += 'dlqr_model_batch_requests_sum{model="digit"} 900.0\ndlqr_model_batch_requests_count{model="digit"} 120.0\n'
    after += 'dlqr_model_batch_queue_wait_seconds_sum{model="digit"} 0.2\n'
    after += 'dlqr_model_batch_queue_wait_seconds_count{model="digit"} 100.0\n'
    st = bench.batch_stats(before, after, "digit")
    assert st["mean_rows"] == 10.0 and st["mean_requests"] == 8.0 and st["runs"] == 100.0
    assert abs(st["mean_queue_wait_ms"] - 2.0) < 1e-9
    assert bench.batch_stats(before, before, "digit") is None  # no model run in between
    assert bench.batch_stats("", after, "wine") is None


def test_peer_goals_and_balance_lines():
    svc, ref = _run("service", "single", 3000.0, 1, 0.1), _run("fastapi", "single", 1500.0, 1, 0.1)
    svc["p99_ms"], ref["p99_ms"] = 4.0, 6.0
    results = _results([svc, ref])
    results["balance"] = [
        {"server": "service", "c": 8, "rps": 1000.0, "p99_ms": 5.0, "split": [4, 4]},
        {"server": "service", "c": 8, "rps": 800.0, "p99_ms": 9.0, "split": [8, 0]},
    ]
    text = bench.render(results, ("digit",), ["service", "fastapi"])
    assert "| 2.00x |" in text  # the service/fastapi column
    assert "digit single c=8: service/FastAPI 2.00x (3,000 vs 1,500 req/s" in text
    assert "(goal >= 1.5x: met)" in text
    assert "digit single c=8: p99 service 4.00 ms vs FastAPI 6.00 ms (goal: no worse: met)" in text
    assert "- service c=8: slowest/fastest 80% (goal >= 85%: NOT met)" in text
    assert "split 4/4" in text and "split 8/0" in text


def test_shadow_outcomes_and_the_shadow_cost_line():
    line = 'dlqr_shadow_requests_total{against="1",model="digit",outcome="%s",version="2"} %s\n'
    before = line % ("scored", "10.0")
    after = line % ("scored", "110.0") + line % ("skipped_busy", "3.0")
    assert bench.shadow_outcomes(before, after) == {"scored": 100.0, "skipped_busy": 3.0}
    run = {"p50_ms": 1.0, "p99_ms": 2.0, "rps": 1000.0}
    results = {"shadow_c8": {"model": "digit", "stable": "1", "shadow": "2", "service": run,
                             "shadowed": {**run, "p50_ms": 1.2}, "outcomes": {"scored": 100.0}}}  # fmt: skip
    text = "\n".join(bench.shadow_lines(results))
    assert "p50 1.20 ms vs 1.00 ms without (+20.0%, goal <= 10%: NOT met)" in text and "scored 100" in text
    assert bench.shadow_lines({}) == []


def test_the_monitor_cost_lines():
    off = {"p50_ms": 1.0, "p99_ms": 2.0, "rps": 1000.0, "worker_cpu_ms": 1.0}
    results = {"monitor_c8": {"wine": {"service": {**off, "worker_cpu_ms": 1.03}, "unmonitored": off},
                              "seizure": {"service": {**off, "worker_cpu_ms": 1.2}, "unmonitored": off}}}  # fmt: skip
    text = "\n".join(bench.monitor_lines(results))
    assert "wine: worker CPU 1.030 vs 1.000 ms/request (+3.0%: met)" in text
    assert "seizure: worker CPU 1.200 vs 1.000 ms/request (+20.0%: NOT met)" in text
    assert bench.monitor_lines({}) == []
