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
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
        item = _Item(rows, deadline, self._event_cls(), self.clock())
        self._queue.append(item)
        self._arrived.set()
        if self._running:
            self._wait(item)
        while not item.done:
            if item.lead or not self._running:
                self._lead(item)
            else:
                self._wait(item)
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
                self._run_batch(self._take())
        finally:
            self._running = False
            if self._queue:
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
        """FIFO items up to max_batch_size rows (at least one, so a big request runs alone)."""
        batch, rows = [], 0
        while self._queue and (not batch or rows + len(self._queue[0].rows) <= self.max_batch_size):
            it = self._queue.popleft()
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
