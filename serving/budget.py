"""Per-request work budget and deadline, reachable from deep inside validation.

:class:`serving.guard.Guard` opens a :class:`RequestBudget` around every
request (a context variable, so it is per greenlet under gevent and per thread
under gthread). Code that is about to do expensive work charges it first:
:func:`dlqr.images._open` charges each image (the app passes :func:`charge_pixels` in the validation context)'s pixel count, read from the
image header before the pixels are decoded. So a request is refused as soon as
the running sum of its declared image sizes passes ``DLQR_MAX_REQUEST_PIXELS``
(413, before that image is decoded) and never decodes more than that in all;
a charge after the request deadline ends it with 504.

Outside a guarded request (unit tests, scripts) there is no budget and
charging is free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from serving.errors import ServingError


class BudgetExceeded(ServingError):
    """The request asks for more decoding work than one request may cost (413)."""

    def __init__(self, used: int, limit: int):
        super().__init__(
            413,
            "request-too-expensive",
            f"the images in this request decode to more than {limit:,} pixels in all "
            f"(at least {used:,}; DLQR_MAX_REQUEST_PIXELS); send fewer or smaller images per request",
        )


class DeadlineExceeded(ServingError):
    """The request ran past its deadline (504, or 503 when it never started work)."""

    def __init__(self, seconds: float, status: int = 504, what: str = "working on it"):
        super().__init__(
            status,
            "deadline-exceeded",
            f"the request was not answered within {seconds:g} s (DLQR_REQUEST_TIMEOUT); {what} took too long",
        )


class RequestBudget:
    """What one request may still spend: decoded pixels and wall time."""

    __slots__ = ("deadline", "max_pixels", "pixels", "pause", "timeout")

    def __init__(
        self,
        max_pixels: int,
        timeout: float | None,
        start: float | None = None,
        pause: Callable[[], None] | None = None,
    ):
        self.max_pixels = max_pixels
        self.pixels = 0
        self.timeout = timeout
        self.deadline = None if timeout is None else (time.monotonic() if start is None else start) + timeout
        #: Called at every charge: under gevent a yield, so that the worker's other requests
        #: (health probes included) run between two image decodes of a long request.
        self.pause = pause

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def check_deadline(self) -> None:
        if self.expired():
            raise DeadlineExceeded(self.timeout or 0)

    def charge_pixels(self, n: int) -> None:
        """Account for decoding ``n`` pixels; raise before the work if it would go over."""
        if self.pause is not None:
            self.pause()
        self.check_deadline()
        self.pixels += n
        if self.pixels > self.max_pixels:
            raise BudgetExceeded(self.pixels, self.max_pixels)


_current: ContextVar[RequestBudget | None] = ContextVar("dlqr_request_budget", default=None)


def current() -> RequestBudget | None:
    return _current.get()


def charge_pixels(n: int) -> None:
    """Charge the current request (no-op outside a guarded request)."""
    budget = _current.get()
    if budget is not None:
        budget.charge_pixels(n)


@contextmanager
def active(budget: RequestBudget) -> Iterator[RequestBudget]:
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)
