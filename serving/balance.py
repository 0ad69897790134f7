"""Connection balancing across Gunicorn workers: only the least-loaded workers accept.

Clients that open their connections at once and keep them alive (``hey``, an
nginx upstream pool, a service mesh) are otherwise split over the workers by
whichever process the kernel wakes first: on a 2-core machine a c=8 run
landed anywhere from 4/4 to 8/0, and one worker then idles while the other
queues. One ``SO_REUSEPORT`` listener per worker does not fix it either: the
kernel hashes each connection's address, so 8 connections over 2 listeners
split 4/4 only about a quarter of the time (``scripts/bench_reuseport.py``;
docs/batching.md has the figures).

The rule here: a worker accepts new connections only while it holds no more
open connections than the least-loaded *other* live worker. Counts live in a
small table in anonymous shared memory that the Gunicorn master creates before
forking (:func:`create_table`, called from ``serving/gunicorn.conf.py``); each
gevent worker claims a slot when it starts serving, updates its count at every
accept and close, and beats a heartbeat so that a stuck, dead or draining
worker (slot released or heartbeat older than :data:`STALE_SECONDS`) is
ignored: the least-loaded live worker always accepts, so nothing waits on a
worker that cannot serve. Hand-written because no library balances
keep-alive connections between pre-forked processes; standard library only
(the master imports this module).
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import struct
import time
from collections.abc import Callable

#: A worker whose heartbeat is older than this is ignored (stuck in a long request, or gone).
STALE_SECONDS = 1.0
#: Slot layout: pid, open connections, heartbeat (CLOCK_MONOTONIC, shared by every process).
_SLOT = struct.Struct("qqd")


class ConnectionTable:
    """Open-connection counts per worker in shared memory (inherited by fork)."""

    def __init__(self, slots: int):
        self.slots = slots
        self._mem = mmap.mmap(-1, slots * _SLOT.size)
        self._lock = multiprocessing.Lock()  # claims only; counts are written by their owner alone

    def claim(self, pid: int) -> int | None:
        """A free slot for ``pid`` (free: never used, released, or stale), or None when full."""
        now = time.monotonic()
        with self._lock:
            for i in range(self.slots):
                owner, _, beat = _SLOT.unpack_from(self._mem, i * _SLOT.size)
                if owner == 0 or owner == pid or now - beat > STALE_SECONDS:
                    _SLOT.pack_into(self._mem, i * _SLOT.size, pid, 0, now)
                    return i
        return None

    def update(self, slot: int, pid: int, conns: int) -> None:
        """The owner's count and heartbeat (one aligned 24-byte write; readers tolerate a torn one)."""
        _SLOT.pack_into(self._mem, slot * _SLOT.size, pid, conns, time.monotonic())

    def release(self, slot: int, pid: int) -> None:
        with self._lock:
            if _SLOT.unpack_from(self._mem, slot * _SLOT.size)[0] == pid:
                _SLOT.pack_into(self._mem, slot * _SLOT.size, 0, 0, 0.0)

    def others(self, slot: int) -> list[int]:
        """Open connections of every other live worker."""
        now = time.monotonic()
        out = []
        for i in range(self.slots):
            if i == slot:
                continue
            owner, conns, beat = _SLOT.unpack_from(self._mem, i * _SLOT.size)
            if owner and now - beat <= STALE_SECONDS:
                out.append(conns)
        return out


class Balancer:
    """One worker's side: counts its connections and pauses/resumes accepting by the rule above."""

    def __init__(self, table: ConnectionTable, pause: Callable[[], None], resume: Callable[[], None]):
        self.table, self.pause, self.resume = table, pause, resume
        self.pid = os.getpid()
        self.slot = table.claim(self.pid)
        self.conns = 0
        self.accepting = True

    def may_accept(self) -> bool:
        """True while this worker holds no more connections than the least-loaded other live one."""
        if self.slot is None:
            return True  # no slot (table full): behave as without balancing
        others = self.table.others(self.slot)
        return not others or self.conns <= min(others)

    def check(self) -> None:
        """Publish the count and heartbeat; pause or resume accepting if the rule says so."""
        if self.slot is None:
            return
        self.table.update(self.slot, self.pid, self.conns)
        allowed = self.may_accept()
        if allowed != self.accepting:
            self.accepting = allowed
            (self.resume if allowed else self.pause)()

    def opened(self) -> None:
        self.conns += 1
        self.check()

    def closed(self) -> None:
        self.conns -= 1
        self.check()

    def close(self) -> None:
        """Leave the table (drain, exit): the other workers stop waiting on this one."""
        if self.slot is not None:
            self.table.release(self.slot, self.pid)
            self.slot = None


#: The master's table, inherited by every worker forked after :func:`create_table`.
TABLE: ConnectionTable | None = None


def create_table(workers: int) -> None:
    """Called in the master (gunicorn.conf.py) before any worker forks; room for replacements too."""
    global TABLE
    TABLE = ConnectionTable(max(4, 4 * workers))
