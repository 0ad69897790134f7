"""serving.balance: the shared connection table and the least-loaded-accepts rule (forked processes)."""

from __future__ import annotations

import os
import time

from serving import balance


def _balancer(table: balance.ConnectionTable, log: list[str]) -> balance.Balancer:
    return balance.Balancer(table, lambda: log.append("pause"), lambda: log.append("resume"))


def test_only_the_least_loaded_worker_accepts():
    table = balance.ConnectionTable(4)
    log_a: list[str] = []
    a = _balancer(table, log_a)
    # A second worker: another process in production; here a second slot with another pid.
    b_slot = table.claim(os.getpid() + 100_000)
    assert b_slot is not None and b_slot != a.slot
    table.update(b_slot, os.getpid() + 100_000, 0)
    a.opened()  # 1 vs 0: A stops accepting
    assert log_a == ["pause"] and not a.accepting
    table.update(b_slot, os.getpid() + 100_000, 1)  # B takes one: 1 vs 1
    a.check()
    assert log_a == ["pause", "resume"] and a.accepting
    a.opened()
    a.closed()  # back to 1 vs 1: still accepting, no flapping
    assert log_a == ["pause", "resume", "pause", "resume"]


def test_a_stale_or_released_worker_is_ignored():
    table = balance.ConnectionTable(4)
    log: list[str] = []
    a = _balancer(table, log)
    other = os.getpid() + 100_000
    slot = table.claim(other)
    table.update(slot, other, 0)
    a.opened()
    assert not a.accepting
    table.release(slot, other)  # the other worker drains or exits
    a.check()
    assert a.accepting
    slot = table.claim(other)
    table.update(slot, other, 0)
    a.check()
    assert not a.accepting
    time.sleep(balance.STALE_SECONDS + 0.1)  # the other one's heartbeat stops (stuck, killed)
    a.check()
    assert a.accepting


def test_table_is_shared_with_a_forked_worker():
    table = balance.ConnectionTable(4)
    parent = _balancer(table, [])
    pid = os.fork()
    if pid == 0:  # the child: a worker that holds 3 connections
        try:
            child = _balancer(table, [])
            for _ in range(3):
                child.opened()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert table.others(parent.slot) == [3]
    assert parent.may_accept()  # 0 <= 3


def test_a_full_table_leaves_the_worker_unbalanced():
    table = balance.ConnectionTable(1)
    other = os.getpid() + 100_000
    assert table.claim(other) == 0
    log: list[str] = []
    b = _balancer(table, log)
    assert b.slot is None
    for _ in range(3):
        b.opened()
    assert b.may_accept() and log == []  # accepts as without balancing
