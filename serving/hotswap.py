"""Hot swap in a Gunicorn worker: the repository watcher thread and the worker's SIGHUP.

Each worker runs one :class:`serving.registry.Watcher`: every
``DLQR_POLL_SECONDS`` it lists the model directories (a ``scandir`` and a few
``stat`` calls; sha256 work only for a directory it has not seen), and
:meth:`serving.registry.Registry.poll` verifies, loads, self-tests and warms up
a new version before publishing it with one assignment.

Signals (Gunicorn owns most of them, see the README's "Hot swap"):

- ``kill -HUP <master>``: Gunicorn's own reload. It starts fresh workers, which
  load the repository's current versions before they accept a connection, then
  stops the old workers gracefully: the new version is served at once, with no
  failed request (each worker loads before it accepts).
- ``kill -HUP <worker>``: handled here: that worker rescans now instead of at its
  next poll (Gunicorn resets a worker's HUP to "terminate"; this handler replaces
  that, so a stray HUP no longer kills a worker).
"""

from __future__ import annotations

import signal
import threading

from serving.registry import Registry, Watcher


def start_watcher(registry: Registry, poll_seconds: float) -> Watcher:
    """Start the watcher (``poll_seconds`` 0: only on SIGHUP) and route this process's SIGHUP to it."""
    watcher = Watcher(registry, poll_seconds or None)
    watcher.start()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda signum, frame: watcher.wake())
    return watcher
