"""Adaptive batching inside one gevent worker: concurrent requests for a model join one run.

Settings (``serving/settings.py``), named after the anchors where they agree:

- ``DLQR_MAX_BATCH_SIZE``: most rows in one model run (MLServer ``max_batch_size``,
  Triton ``preferred_batch_size``); 1 turns batching off. A request with more rows
  than that runs alone, never split.
- ``DLQR_MAX_QUEUE_DELAY_MICROSECONDS``: longest the first request of a batch waits
  for batch-mates (Triton ``max_queue_delay_microseconds``, MLServer ``max_batch_time``).

How it works: a request that finds no run in progress becomes the *leader*. It
waits for batch-mates only while other requests are in flight in this worker
(``others_in_flight``, the guard's count), so at c=1 it runs at once with no
added latency. Requests that arrive while a run is in progress queue; when the
run ends, the first queued one leads the next batch. Each request keeps its own
validation (done before it queues), deadline and answer: a request whose
deadline passes while queued leaves the queue with :class:`QueueDeadline` and
does not run; if a batched run fails, each of its requests is run alone, so
one bad input never fails its batch-mates. Hand-written because no library
batches across greenlets of a WSGI worker; built on gevent's Event.

The data plane uses it through :class:`BatchingRunner`, its ``runner``
(``runner(model, x) -> outputs``, see :mod:`serving.dataplane`): one
:class:`Batcher` per loaded model version, created on first use in the process
that serves (so after Gunicorn forks, never in the master). The request's
deadline is that of its :class:`serving.budget.RequestBudget`; a request still
queued at that deadline is answered 504 ``queue-deadline-exceeded``. Without
gevent (a sync or gthread worker, the Flask test client, offline scoring) the
runner runs each call directly: there are no concurrent greenlets to join.
"""

from __future__ import annotations

import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving import budget
from serving.errors import ServingError


class QueueDeadline(Exception):
    """The request's deadline passed while it waited for a batch: it did not run (504)."""


@dataclass(eq=False)
class _Item:
    rows: np.ndarray
    deadline: float | None
    event: Any
    enqueued: float
    result: np.ndarray | None = None
    error: BaseException | None = None
    taken: bool = False
    lead: bool = False
    done: bool = False


#: ``observe(rows, requests, queue_waits_seconds)`` after every model run.
Observer = Callable[[int, int, list[float]], None]


@dataclass(eq=False)
class Batcher:
    """One model version's queue; ``run`` maps a stacked (n, d) array to (n, k) outputs."""

    run: Callable[[np.ndarray], np.ndarray]
    max_batch_size: int
    max_queue_delay_us: int
    others_in_flight: Callable[[], int] = lambda: 0
    observe: Observer | None = None
    clock: Callable[[], float] = time.monotonic
    _queue: deque = field(default_factory=deque)
    _running: bool = False
    _arrived: Any = None

    def __post_init__(self) -> None:
        from gevent.event import Event

        self._event_cls = Event
        self._arrived = Event()

    def submit(self, rows: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """The model's outputs for ``rows``, run alone or with concurrent requests' rows."""
        if self.max_batch_size <= 1:
            return self._run_alone(rows)
        if not self._running and not self._queue and self.others_in_flight() <= 0:
            # Alone in the worker: run now, with no queue entry and no wait.
            self._running = True
            try:
                return self._run_alone(rows)
            finally:
                self._running = False
                self._hand_over()  # a run that yields may have let others queue meanwhile
        item = _Item(rows, deadline, self._event_cls(), self.clock())
        self._queue.append(item)
        self._arrived.set()
        try:
            if self._running:
                self._wait(item)
            while not item.done:
                if item.lead or not self._running:
                    self._lead(item)
                else:
                    self._wait(item)
        except BaseException:
            # Killed while queued (worker timeout, greenlet kill): leave the queue, and pass on
            # the lead if it was handed to us, so the requests behind us are not left waiting.
            if not item.taken and item in self._queue:
                self._queue.remove(item)
            self._hand_over()
            raise
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    # ------------------------------------------------------------------ inside

    def _run_alone(self, rows: np.ndarray) -> np.ndarray:
        out = self.run(rows)
        if self.observe:
            self.observe(len(rows), 1, [0.0])
        return out

    def _wait(self, item: _Item) -> None:
        """Sleep until a leader answers us or hands us the lead; leave the queue at the deadline."""
        item.event.clear()
        timeout = None if item.deadline is None else max(0.0, item.deadline - self.clock())
        if not item.event.wait(timeout) and not item.taken:
            # Still queued at the deadline: leave without running.
            self._queue.remove(item)
            item.done, item.error = True, QueueDeadline("the request's deadline passed while it was queued")
            return
        if item.taken and not item.done:
            item.event.wait()  # running in a batch now: its answer follows

    def _lead(self, item: _Item) -> None:
        """Run batches until our own item is answered; then hand the lead to the next queued one."""
        item.lead = False
        self._running = True
        try:
            while not item.done:
                self._gather()
                batch = self._take()
                if batch:  # empty when every taken request had expired
                    self._run_batch(batch)
        finally:
            self._running = False
            self._hand_over()

    def _hand_over(self) -> None:
        """With no run in progress, the first queued request leads the next batch."""
        if not self._running and self._queue:
            nxt = self._queue[0]
            nxt.lead = True
            nxt.event.set()

    def _queued_rows(self) -> int:
        return sum(len(i.rows) for i in self._queue)

    def _gather(self) -> None:
        """Wait up to the delay for batch-mates, only while other requests are in flight."""
        end = self.clock() + self.max_queue_delay_us / 1e6
        while self._queued_rows() < self.max_batch_size and self.others_in_flight() >= len(self._queue):
            left = end - self.clock()
            if left <= 0:
                return
            self._arrived.clear()
            self._arrived.wait(left)

    def _take(self) -> list[_Item]:
        """FIFO items up to max_batch_size rows (at least one, so a big request runs alone).

        An item whose deadline has passed leaves with :class:`QueueDeadline` instead of running
        (its own timer may not have fired yet when the leader takes the batch).
        """
        batch, rows = [], 0
        now = self.clock()
        while self._queue and (not batch or rows + len(self._queue[0].rows) <= self.max_batch_size):
            it = self._queue.popleft()
            if it.deadline is not None and now > it.deadline:
                it.done, it.error = True, QueueDeadline("the request's deadline passed while it was queued")
                it.event.set()
                continue
            it.taken = True
            batch.append(it)
            rows += len(it.rows)
        return batch

    def _run_batch(self, batch: list[_Item]) -> None:
        now = self.clock()
        waits = [now - it.enqueued for it in batch]
        try:
            if len(batch) == 1:
                outs = [self.run(batch[0].rows)]
            else:
                stacked = self.run(np.concatenate([it.rows for it in batch]))
                bounds = np.cumsum([len(it.rows) for it in batch])[:-1]
                outs = np.split(stacked, bounds)
        except Exception:
            if len(batch) == 1:
                outs = None
                batch[0].error = _current_error()
            else:
                # One input broke the stacked run: run each alone, so only its owner fails.
                for it in batch:
                    try:
                        it.result = self.run(it.rows)
                    except Exception as exc:
                        it.error = exc
                outs = None
        if outs is not None:
            for it, out in zip(batch, outs, strict=True):
                it.result = out
        if self.observe:
            self.observe(sum(len(it.rows) for it in batch), len(batch), waits)
        for it in batch:
            it.done = True
            it.event.set()


def _current_error() -> BaseException:
    import sys

    exc = sys.exc_info()[1]
    assert exc is not None
    return exc


#: ``observe(model, rows, requests, queue_waits_seconds)`` after every model run.
ModelObserver = Callable[[str, int, int, list[float]], None]


class BatchingRunner:
    """The data plane's runner with adaptive batching: ``runner(model, x) -> outputs``.

    ``gevent`` says whether requests run as greenlets of one process (a gevent worker):
    only then do concurrent calls batch; otherwise every call runs directly (and is still
    observed as a run of one request). ``others_in_flight`` is the number of other
    requests in work in this worker (the guard's count).
    """

    def __init__(
        self,
        max_batch_size: int,
        max_queue_delay_us: int,
        *,
        gevent: bool,
        others_in_flight: Callable[[], int] = lambda: 0,
        observe: ModelObserver | None = None,
    ):
        self.max_batch_size = max_batch_size
        self.max_queue_delay_us = max_queue_delay_us
        self.gevent = gevent
        self.others_in_flight = others_in_flight
        self.observe = observe
        # id(model) -> (weak reference to the model, its Batcher); made in the serving process
        self._batchers: dict[int, tuple[weakref.ref, Batcher]] = {}
        self._pid: int | None = None

    def __call__(self, model: Any, x: np.ndarray) -> np.ndarray:
        if not self.gevent:
            out = model.forward(x)
            if self.observe is not None:
                self.observe(model.name, len(x), 1, [0.0])
            return out
        req_budget = budget.current()
        deadline = req_budget.deadline if req_budget is not None else None
        try:
            return self.batcher(model).submit(x, deadline)
        except QueueDeadline:
            raise ServingError(
                504,
                "queue-deadline-exceeded",
                f"the request's deadline (DLQR_REQUEST_TIMEOUT {req_budget.timeout if req_budget else 0:g} s) "
                "passed while it waited for a batched model run; it was not run",
            ) from None

    def batcher(self, model: Any) -> Batcher:
        """This process's Batcher for one loaded model version (created on first use)."""
        pid = os.getpid()
        if pid != self._pid:  # first call, or a fork: a Batcher's gevent objects stay in their process
            self._batchers, self._pid = {}, pid
        entry = self._batchers.get(id(model))
        if entry is not None and entry[0]() is model:
            return entry[1]
        # A hot swap replaces the LoadedModel: forget the Batchers of models that are gone.
        self._batchers = {k: v for k, v in self._batchers.items() if v[0]() is not None}
        observe = None
        if self.observe is not None:
            name, obs = model.name, self.observe

            def observe(rows: int, requests: int, waits: list[float]) -> None:
                obs(name, rows, requests, waits)

        b = Batcher(
            model.forward,
            self.max_batch_size,
            self.max_queue_delay_us,
            others_in_flight=self.others_in_flight,
            observe=observe,
        )
        self._batchers[id(model)] = (weakref.ref(model), b)
        return b
