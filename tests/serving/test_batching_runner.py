"""Adaptive batching through the data plane (serving.batching.BatchingRunner), with real greenlets
and a real tiny digit bundle: batches form, every request keeps its own answer, checks and deadline."""

from __future__ import annotations

import dataclasses
import gc

import gevent
import numpy as np
import pytest

from serving import budget
from serving.batching import BatchingRunner
from serving.dataplane import DataPlane, RequestInfo, run_model
from serving.errors import ServingError
from tests.serving import bundles


@pytest.fixture(scope="module")
def digit(artifacts):
    """The loaded tiny digit model."""
    from dlqr.card import get as get_card
    from serving.registry import Registry
    from serving.schemas import model_schemas

    card = get_card("digit")
    reg = Registry(
        artifacts, {"digit": model_schemas(card, 64).instance_adapter.validate_python}, names=("digit",)
    )
    reg.load_all()
    return reg.states["digit"].model


class Recorder:
    """The runner's observer: (model, rows, requests, queue waits) per model run."""

    def __init__(self):
        self.runs: list[tuple[str, int, int, list[float]]] = []

    def __call__(self, model, rows, requests, waits):
        self.runs.append((model, rows, requests, list(waits)))


def _concurrent(
    plane: DataPlane, model, requests: list[np.ndarray], inflight: list[int]
) -> list[gevent.Greenlet]:
    """Every request in its own greenlet, counted in flight and yielding once first (as the guard does)."""

    def one(rows):
        inflight[0] += 1
        try:
            gevent.sleep(0)
            return plane.predict(model, rows, RequestInfo("predict"))
        finally:
            inflight[0] -= 1

    jobs = [gevent.spawn(one, rows) for rows in requests]
    gevent.joinall(jobs)
    return jobs


def _runner(rec: Recorder, inflight: list[int], **kw) -> BatchingRunner:
    kw.setdefault("max_batch_size", 64)
    kw.setdefault("max_queue_delay_us", 2000)
    return BatchingRunner(
        kw.pop("max_batch_size"), kw.pop("max_queue_delay_us"), gevent=True,
        others_in_flight=lambda: inflight[0] - 1, observe=rec, **kw,
    )  # fmt: skip


def test_concurrent_requests_join_runs_and_answer_as_unbatched(digit):
    rec, inflight = Recorder(), [0]
    plane = DataPlane(runner=_runner(rec, inflight))
    requests = [bundles.sample_rows("digit", 1 + i % 3, seed=i) for i in range(32)]
    jobs = _concurrent(plane, digit, requests, inflight)
    alone = DataPlane()  # the plain runner: one ONNX Runtime run per request
    for rows, job in zip(requests, jobs, strict=True):
        assert job.successful(), job.exception
        want = alone.predict(digit, rows, RequestInfo("predict"))
        assert job.value.predictions == want.predictions
        np.testing.assert_allclose(job.value.outputs, want.outputs, rtol=1e-5, atol=1e-6)
    assert sum(r for _, r, _, _ in rec.runs) == sum(len(r) for r in requests)
    assert sum(n for _, _, n, _ in rec.runs) == 32
    assert len(rec.runs) < 32 / 2 and max(r for _, r, _, _ in rec.runs) <= 64
    assert {m for m, _, _, _ in rec.runs} == {"digit"}
    assert all(w >= 0 for _, _, _, waits in rec.runs for w in waits)


def test_one_request_with_a_non_finite_output_fails_alone(digit):
    """Each request keeps its own output check: a NaN in one request's rows is its 422 only."""
    rec, inflight = Recorder(), [0]
    marker = 255.0

    def forward(x):
        out = np.asarray(digit.forward(x), dtype=np.float64)
        out[x[:, 0] == np.float32(digit.model_input(np.full((1, x.shape[1]), marker))[0, 0])] = np.nan
        return out

    model = dataclasses.replace(digit, forward=forward)
    plane = DataPlane(runner=_runner(rec, inflight))
    requests = [bundles.sample_rows("digit", 1, seed=i) for i in range(8)]
    for rows in requests:
        rows[:, 0] = 0.0
    requests[3][0, 0] = marker
    jobs = _concurrent(plane, model, requests, inflight)
    assert isinstance(jobs[3].exception, ServingError) and jobs[3].exception.status == 422
    for i, job in enumerate(jobs):
        if i != 3:
            want = DataPlane().predict(digit, requests[i], RequestInfo("predict")).predictions
            assert job.successful() and job.value.predictions == want
    assert max(n for _, _, n, _ in rec.runs) > 1  # the bad one did share a run


def test_a_request_whose_deadline_passes_while_queued_gets_504_and_does_not_run(digit):
    ran: list[int] = []

    def slow_forward(x):
        ran.append(len(x))
        gevent.sleep(0.1)  # a long run; the next request queues behind it
        return digit.forward(x)

    model = dataclasses.replace(digit, forward=slow_forward)
    inflight = [2]  # both requests are in work
    plane = DataPlane(runner=_runner(Recorder(), inflight, max_queue_delay_us=0))
    first = gevent.spawn(plane.predict, model, bundles.sample_rows("digit", 1), RequestInfo("predict"))
    gevent.sleep(0)  # the first one is running

    def late():
        with budget.active(budget.RequestBudget(10**9, 0.02)):
            return plane.predict(model, bundles.sample_rows("digit", 2, seed=1), RequestInfo("predict"))

    second = gevent.spawn(late)
    gevent.joinall([first, second])
    assert first.successful()
    err = second.exception
    assert isinstance(err, ServingError) and (err.status, err.slug) == (504, "queue-deadline-exceeded")
    assert "was not run" in err.detail
    assert ran == [1]  # the expired request never reached the model


def test_alone_a_request_runs_at_once(digit):
    rec, inflight = Recorder(), [1]
    plane = DataPlane(runner=_runner(rec, inflight, max_queue_delay_us=500_000))
    t0 = gevent.get_hub().loop.now()
    plane.predict(digit, bundles.sample_rows("digit", 1), RequestInfo("predict"))
    assert gevent.get_hub().loop.now() - t0 < 0.1  # the long delay was not spent
    assert rec.runs == [("digit", 1, 1, [0.0])]


def test_without_gevent_every_call_runs_directly_and_is_observed(digit):
    rec = Recorder()
    runner = BatchingRunner(64, 2000, gevent=False, observe=rec)
    rows = bundles.sample_rows("digit", 3)
    got = DataPlane(runner=runner).predict(digit, rows, RequestInfo("offline"))
    assert got.predictions == DataPlane().predict(digit, rows, RequestInfo("offline")).predictions
    assert rec.runs == [("digit", 3, 1, [0.0])] and runner._batchers == {}


def test_offline_scoring_runs_the_model_directly():
    """Offline scoring is one process without gevent; its data plane has the plain runner."""
    assert DataPlane().runner is run_model


def test_one_batcher_per_model_and_process_and_none_for_a_dropped_model(digit):
    runner = BatchingRunner(64, 2000, gevent=True)
    b = runner.batcher(digit)
    assert runner.batcher(digit) is b
    swapped = dataclasses.replace(digit)  # a hot swap's new LoadedModel of the same version
    assert runner.batcher(swapped) is not b
    del swapped
    gc.collect()
    newer = dataclasses.replace(digit)  # the next swap: the gone model's batcher is dropped
    runner.batcher(newer)
    assert [ref() for ref, _ in runner._batchers.values()] == [digit, newer]
    runner._pid = -1  # as seen by a forked child
    assert runner.batcher(digit) is not b


def test_the_app_records_the_batching_histograms(make_app, artifacts, golden):
    app = make_app(ARTIFACTS_DIR=artifacts, MODELS=("digit",))
    runner = app.extensions["dlqr"].plane.runner
    assert isinstance(runner, BatchingRunner) and runner.gevent is False  # the test client: no gevent
    instances = [g["input"] for g in golden["digit"][:2]]
    r = app.test_client().post("/predict/digit", json={"instances": instances})
    assert r.status_code == 200
    reg = app.extensions["dlqr_metrics"].registry

    def value(name):
        return reg.get_sample_value(name, {"model": "digit"})

    assert value("dlqr_model_batch_rows_sum") == 2 and value("dlqr_model_batch_rows_count") == 1
    assert value("dlqr_model_batch_requests_sum") == 1
    assert value("dlqr_model_batch_queue_wait_seconds_count") == 1
