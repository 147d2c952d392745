"""A worker whose status record goes stale (its writer stuck or dead mid-write): fake clock, real table."""

from __future__ import annotations

import logging

import pytest

from llm_service.status_table import StatusTable
from supervisor.pool import STALE_WARN_READS
from tests.supervisor.fakes import FakeClock, FakeOps
from tests.supervisor.test_pool import clock, ops, running_pool

__all__ = ["clock", "ops"]


def test_a_stale_record_is_judged_by_its_last_good_reading_then_as_hung(
    table: StatusTable,
    ops: FakeOps,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = running_pool(table, ops, clock, worker_processes=1)
    slot = pool.slots[0]
    table.writer(0).update(heartbeat=clock.now, done=5)
    assert pool.read()[0].done == 5
    table.writer(0)._begin()  # the writer dies mid-write: the counter stays odd
    for _ in range(STALE_WARN_READS):
        snap = pool.read()[0]
        assert snap.done == 5 and snap.pid == slot.pid  # the last good reading
    assert pool.stale == {0: STALE_WARN_READS}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "status record unreadable" in warnings[0]
    clock.advance(5)
    pool.check_heartbeats(pool.read())
    assert ops.signals == []  # not hung yet: its last heartbeat is 5 s old, the timeout is 10 s
    clock.advance(6)
    pool.check_heartbeats(pool.read())
    assert ops.sent(slot.pid)  # silent past the timeout: dump, then TERM / KILL like any hung worker


def test_a_record_is_copied_again_only_after_its_writer_changed_it(
    table: StatusTable, ops: FakeOps, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = running_pool(table, ops, clock, worker_processes=1)
    copies: list[int] = []
    real_read = table.read
    monkeypatch.setattr(table, "read", lambda slot: copies.append(slot) or real_read(slot))
    writer = table.writer(0)
    writer.update(heartbeat=clock.now, done=5)
    assert pool.read()[0].done == 5
    assert pool.read()[0].done == 5 and len(copies) == 1  # unchanged counter: the cached copy
    pool.set_control(intake_paused=True, concurrency_cap=3)  # written outside the counter
    snap = pool.read()[0]
    assert (snap.intake_paused, snap.concurrency_cap, snap.done) == (True, 3, 5) and len(copies) == 1
    writer.add(done=1)
    assert pool.read()[0].done == 6 and len(copies) == 2
    slot = pool.slots[0]
    pool.on_exit(slot.pid, 9)  # killed: replaced at once, its record cleared; the new writer counts from 0
    table.writer(0).update(pid=pool.slots[0].pid, done=1)
    assert pool.read()[0].done == 1
