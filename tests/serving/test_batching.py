"""serving.batching with real greenlets: batches form, answers stay per request, deadlines hold."""

from __future__ import annotations

import time

import gevent
import numpy as np
import pytest

from serving.batching import Batcher, QueueDeadline


def _model(calls: list[int]):
    """A stand-in model: row sums times 2; refuses a row holding a negative value (a bad input)."""

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        gevent.sleep(0.001)  # a run takes time; others arrive meanwhile
        return x.sum(axis=1, keepdims=True) * 2.0

    return run


def _batcher(calls, seen, **kw) -> Batcher:
    kw.setdefault("max_batch_size", 64)
    kw.setdefault("max_queue_delay_us", 2000)
    return Batcher(_model(calls), observe=lambda r, n, w: seen.append((r, n, w)), **kw)


def test_concurrent_requests_share_runs_and_keep_their_own_answers():
    calls, seen = [], []
    inflight = [0]
    b = _batcher(calls, seen, others_in_flight=lambda: inflight[0] - 1)
    inputs = [np.full((1 + i % 3, 4), float(i)) for i in range(32)]

    def client(x):
        inflight[0] += 1
        try:
            return b.submit(x)
        finally:
            inflight[0] -= 1

    jobs = [gevent.spawn(client, x) for x in inputs]
    gevent.joinall(jobs, raise_error=True)
    for x, job in zip(inputs, jobs, strict=True):
        np.testing.assert_array_equal(job.value, x.sum(axis=1, keepdims=True) * 2.0)
    assert sum(calls) == sum(len(x) for x in inputs)
    assert len(calls) < 32 / 4  # batched: far fewer runs than requests
    assert max(calls) <= 64
    assert sum(n for _, n, _ in seen) == 32


def test_alone_it_runs_at_once_without_waiting():
    calls, seen = [], []
    b = _batcher(calls, seen, max_queue_delay_us=500_000)  # a long delay that must not be spent
    t = gevent.get_hub().loop.now()
    out = b.submit(np.ones((1, 3)))
    assert out.tolist() == [[6.0]]
    assert gevent.get_hub().loop.now() - t < 0.1 and seen[0][:2] == (1, 1)


def test_one_bad_request_does_not_fail_its_batch_mates():
    calls, seen = [], []
    inflight = [0]
    b = _batcher(calls, seen, others_in_flight=lambda: inflight[0] - 1)
    inputs = [np.full((1, 2), float(i)) for i in range(8)]
    inputs[5] = np.full((1, 2), -1.0)

    def client(x):
        inflight[0] += 1
        try:
            return b.submit(x)
        finally:
            inflight[0] -= 1

    jobs = [gevent.spawn(client, x) for x in inputs]
    gevent.joinall(jobs)
    assert isinstance(jobs[5].exception, ValueError)
    for i, job in enumerate(jobs):
        if i != 5:
            assert job.successful() and job.value.tolist() == [[4.0 * i]]


def test_a_request_whose_deadline_passes_in_the_queue_does_not_run():
    ran: list[float] = []

    def slow(x):
        ran.append(float(x[0, 0]))
        gevent.sleep(0.05)
        return x

    b = Batcher(slow, max_batch_size=1_000, max_queue_delay_us=0)
    first = gevent.spawn(b.submit, np.full((1, 1), 1.0))
    gevent.sleep(0)  # the first one is running
    late = gevent.spawn(b.submit, np.full((1, 1), 2.0), time.monotonic() + 0.01)
    gevent.joinall([first, late])
    assert first.successful()
    assert isinstance(late.exception, QueueDeadline)
    assert ran == [1.0]  # the expired one never ran


def test_a_request_bigger_than_the_batch_runs_alone_and_batching_off_runs_directly():
    calls, seen = [], []
    b = _batcher(calls, seen, max_batch_size=4)
    assert b.submit(np.ones((10, 1))).shape == (10, 1)
    off = _batcher(calls, seen, max_batch_size=1)
    assert off.submit(np.ones((2, 1))).tolist() == [[2.0], [2.0]]
    assert calls == [10, 2]


@pytest.mark.parametrize("delay_us", [0, 5000])
def test_the_batch_never_exceeds_max_rows(delay_us):
    calls, seen = [], []
    inflight = [0]
    b = _batcher(
        calls, seen, max_batch_size=8, max_queue_delay_us=delay_us, others_in_flight=lambda: inflight[0] - 1
    )

    def client(x):
        inflight[0] += 1
        try:
            return b.submit(x)
        finally:
            inflight[0] -= 1

    jobs = [gevent.spawn(client, np.ones((3, 1))) for _ in range(10)]
    gevent.joinall(jobs, raise_error=True)
    assert max(calls) <= 8 and sum(calls) == 30


def test_a_request_killed_while_queued_leaves_and_the_next_one_still_runs():
    ran: list[float] = []

    def slow(x):
        ran.append(float(x[0, 0]))
        gevent.sleep(0.02)  # a run that yields: others queue behind it
        return x

    b = Batcher(slow, max_batch_size=1_000, max_queue_delay_us=0)
    first = gevent.spawn(b.submit, np.full((1, 1), 1.0))
    gevent.sleep(0)  # the first one is running
    killed = gevent.spawn(b.submit, np.full((1, 1), 2.0))
    behind = gevent.spawn(b.submit, np.full((1, 1), 3.0))
    gevent.sleep(0)  # both queued
    killed.kill()  # e.g. a worker timeout in that greenlet
    gevent.joinall([first, behind], timeout=5)
    assert first.successful() and behind.successful() and behind.value.tolist() == [[3.0]]
    assert ran == [1.0, 3.0] and not b._queue and not b._running


def test_a_request_already_past_its_deadline_when_the_batch_is_taken_does_not_run():
    """Its own timer may fire later than the leader's take: the take checks the deadline too."""
    now = [100.0]
    ran: list[float] = []

    def run(x):
        ran.extend(x[:, 0].tolist())
        return x

    b = Batcher(run, max_batch_size=64, max_queue_delay_us=100_000, others_in_flight=lambda: 2,
                clock=lambda: now[0])  # fmt: skip
    leader = gevent.spawn(b.submit, np.full((1, 1), 1.0))
    late = gevent.spawn(b.submit, np.full((1, 1), 2.0), now[0] + 1.0)  # 1 s of the fake clock

    def jump():
        now[0] += 10.0  # the deadline passes (by the batcher's clock) while it is queued

    gevent.spawn(jump)
    t0 = time.monotonic()
    gevent.joinall([leader, late], timeout=5)
    assert leader.successful() and isinstance(late.exception, QueueDeadline)
    assert ran == [1.0] and time.monotonic() - t0 < 0.5
