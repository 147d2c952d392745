"""The pool's decisions with a fake clock and fake processes; the status table is real shared memory."""

from __future__ import annotations

import signal

import pytest

from llm_service import exit_codes
from llm_service.status_table import StatusTable, WorkerState
from supervisor.pool import Pool
from supervisor.slot import Slot, SlotState, StopReason
from tests.supervisor.fakes import FakeClock, FakeOps, settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ops() -> FakeOps:
    return FakeOps()


def make_pool(
    table: StatusTable, ops: FakeOps, clock: FakeClock, *, hostname: str = "h", **overrides: object
) -> Pool:
    values: dict[str, object] = {
        "worker_processes": 2,
        "worker_heartbeat_timeout": 10,
        "worker_kill_grace_s": 2,
        "worker_drain_timeout": 30,
        "worker_max_processes": 4,
    }
    values.update(overrides)
    return Pool(
        settings=settings(**values),
        table=table,
        ops=ops,
        clock=clock,
        hostname=hostname,
        rand=lambda: 0.5,
        in_child=lambda: None,
    )


def report_running(table: StatusTable, pool: Pool, clock: FakeClock) -> None:
    for slot in pool.live_slots():
        table.writer(slot.index).update(pid=slot.pid, state=WorkerState.RUNNING, heartbeat=clock.now)
    pool.observe(pool.read())


def running_pool(table: StatusTable, ops: FakeOps, clock: FakeClock, **overrides: object) -> Pool:
    """A pool whose workers are started and have reported RUNNING."""
    pool = make_pool(table, ops, clock, **overrides)
    pool.fill()
    report_running(table, pool, clock)
    return pool


def state_of(slot: Slot) -> SlotState:
    """Read the state through a call, so mypy does not narrow it across the pool's actions."""
    return slot.state


def reap(pool: Pool, ops: FakeOps) -> None:
    for pid, status in ops.reap():
        assert pool.on_exit(pid, status)


def test_fill_starts_wanted_slots_with_their_identity(
    table: StatusTable, ops: FakeOps, clock: FakeClock
) -> None:
    pool = make_pool(table, ops, clock)
    pool.fill()
    assert [s.state for s in pool.slots] == [SlotState.STARTING] * 2 + [SlotState.STOPPED] * 2
    assert [r.group_instance_id for _, r in ops.spawned] == ["llm-worker-h-0", "llm-worker-h-1"]
    report_running(table, pool, clock)
    assert [s.state for s in pool.wanted_slots()] == [SlotState.RUNNING] * 2


def test_a_killed_worker_is_replaced_at_once_in_the_same_slot(
    table: StatusTable, ops: FakeOps, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    pool = running_pool(table, ops, clock)
    victim = pool.slots[1]
    old_pid = victim.pid
    entry = table.writer(1).task_started("task-7")
    table.writer(1).task_took_place()
    clock.advance(60)
    ops.exit(old_pid, sig=signal.SIGKILL)
    reap(pool, ops)
    assert victim.state is SlotState.STARTING and victim.pid != old_pid and victim.restarts == 1
    assert ops.spawned[-1][1].group_instance_id == "llm-worker-h-1"
    assert pool.deaths == 1 and pool.tasks_interrupted == 1
    assert "task-7 (RECEIVED)" in caplog.text and "killed by SIGKILL" in caplog.text
    assert entry == 0


def test_boot_failures_back_off_then_go_fatal_then_retry_after_cooloff(
    table: StatusTable, ops: FakeOps, clock: FakeClock
) -> None:
    pool = make_pool(
        table, ops, clock, worker_processes=1, worker_max_quick_failures=3, worker_fatal_cooloff_s=60
    )
    pool.fill()
    slot = pool.slots[0]
    seen = []
    for _ in range(3):
        ops.exit(slot.pid, code=exit_codes.BOOT_FAILED)
        reap(pool, ops)
        seen.append(slot.state)
        if slot.state is SlotState.BACKOFF:
            clock.now = slot.retry_at
            pool.fill()
    assert seen == [SlotState.STARTING, SlotState.BACKOFF, SlotState.FATAL]
    clock.advance(59)
    pool.fill()
    assert slot.state is SlotState.FATAL
    clock.advance(2)
    pool.fill()
    assert state_of(slot) is SlotState.STARTING


def test_a_silent_worker_gets_a_dump_then_term_then_kill(
    table: StatusTable, ops: FakeOps, clock: FakeClock
) -> None:
    pool = running_pool(table, ops, clock, worker_processes=1)
    pid = pool.slots[0].pid
    clock.advance(9)
    pool.check_heartbeats(pool.read())
    assert ops.sent(pid) == []
    clock.advance(2)
    pool.check_heartbeats(pool.read())
    assert ops.sent(pid) == ["SIGUSR2", "SIGTERM", "SIGCONT"]
    assert pool.slots[0].state is SlotState.STOPPING
    clock.advance(2.1)
    pool.escalate()
    assert ops.sent(pid)[-1] == "SIGKILL"
    ops.exit(pid, sig=signal.SIGKILL)
    reap(pool, ops)
    assert state_of(pool.slots[0]) is SlotState.STARTING  # it had run long enough: replaced at once


def test_heartbeats_keep_a_worker_alive(table: StatusTable, ops: FakeOps, clock: FakeClock) -> None:
    pool = running_pool(table, ops, clock, worker_processes=1)
    for _ in range(5):
        clock.advance(8)
        table.writer(0).update(heartbeat=clock.now)
        pool.check_heartbeats(pool.read())
    assert ops.signals == []


def test_recycle_drains_then_replaces(table: StatusTable, ops: FakeOps, clock: FakeClock) -> None:
    pool = running_pool(table, ops, clock, worker_processes=1)
    slot = pool.slots[0]
    pid = slot.pid
    pool.drain(slot, StopReason.RECYCLE)
    assert ops.sent(pid) == ["SIGTERM"] and table.read(0).drain
    ops.exit(pid, code=0)
    reap(pool, ops)
    assert slot.state is SlotState.STARTING and slot.pid != pid
    assert not table.read(0).drain  # the new worker starts with a clean control area


def test_a_worker_that_does_not_drain_is_killed_at_the_deadline(
    table: StatusTable, ops: FakeOps, clock: FakeClock
) -> None:
    pool = running_pool(table, ops, clock, worker_processes=1)
    pid = pool.slots[0].pid
    pool.drain(pool.slots[0], StopReason.RECYCLE)
    clock.advance(29)
    pool.escalate()
    assert ops.sent(pid) == ["SIGTERM"]
    clock.advance(2)
    pool.escalate()
    assert ops.sent(pid) == ["SIGTERM", "SIGKILL"] and pool.slots[0].state is SlotState.STOPPING


def test_scale_down_drains_the_highest_slots_and_does_not_replace(
    table: StatusTable, ops: FakeOps, clock: FakeClock
) -> None:
    pool = running_pool(table, ops, clock, worker_processes=3)
    pool.resize(1)
    pool.trim()
    assert [s.state for s in pool.slots[:3]] == [SlotState.RUNNING, SlotState.DRAINING, SlotState.DRAINING]
    for slot in pool.slots[1:3]:
        ops.exit(slot.pid, code=0)
    reap(pool, ops)
    assert [s.state for s in pool.slots[:3]] == [SlotState.RUNNING, SlotState.STOPPED, SlotState.STOPPED]
    pool.resize(4)
    pool.fill()
    assert [s.state for s in pool.slots] == [SlotState.RUNNING] + [SlotState.STARTING] * 3


def test_rolling_restart_replaces_one_worker_at_a_time(
    table: StatusTable, ops: FakeOps, clock: FakeClock
) -> None:
    pool = running_pool(table, ops, clock, worker_processes=3)
    pool.start_rolling()
    order = []
    for _ in range(3):
        assert pool.roll() is False
        draining = [s for s in pool.slots if s.state is SlotState.DRAINING]
        assert len(draining) == 1
        order.append(draining[0].index)
        assert pool.roll() is False  # nothing more while one is out
        ops.exit(draining[0].pid, code=0)
        reap(pool, ops)
        assert draining[0].state is SlotState.STARTING
        assert pool.roll() is False  # waits for the new one to run
        report_running(table, pool, clock)
    assert order == [0, 1, 2]
    assert pool.roll() is True
    assert all(s.generation == 1 for s in pool.wanted_slots())


def test_rolling_restart_halts_when_new_workers_fail(
    table: StatusTable, ops: FakeOps, clock: FakeClock
) -> None:
    pool = running_pool(table, ops, clock, worker_processes=2)
    pool.start_rolling()
    pool.roll()
    first = pool.slots[0]
    ops.exit(first.pid, code=0)
    reap(pool, ops)
    for _ in range(2):
        ops.exit(first.pid, code=exit_codes.BOOT_FAILED)
        reap(pool, ops)
    assert first.state is SlotState.BACKOFF
    assert pool.roll() is False
    assert pool.slots[1].state is SlotState.RUNNING  # the old worker keeps serving


def test_graceful_stop_then_exit_codes(table: StatusTable, ops: FakeOps, clock: FakeClock) -> None:
    pool = running_pool(table, ops, clock)
    pool.stop_all(fast=False, deadline=clock.now + 40)
    assert all(ops.sent(s.pid) == ["SIGTERM"] for s in pool.wanted_slots())
    for slot in pool.wanted_slots():
        ops.exit(slot.pid, code=0)
    reap(pool, ops)
    assert pool.all_down() and not pool.unclean_stop
    pool.fill()
    assert ops.spawned and len(ops.spawned) == 2  # nothing restarted while stopping


def test_stop_deadline_kills_and_marks_unclean(table: StatusTable, ops: FakeOps, clock: FakeClock) -> None:
    pool = running_pool(table, ops, clock, worker_processes=1)
    pid = pool.slots[0].pid
    pool.stop_all(fast=False, deadline=clock.now + 40)
    clock.advance(41)
    pool.escalate()
    assert ops.sent(pid) == ["SIGTERM", "SIGKILL"]
    ops.exit(pid, sig=signal.SIGKILL)
    reap(pool, ops)
    assert pool.unclean_stop and pool.slots[0].state is SlotState.STOPPED


def test_fast_stop_sends_sigquit(table: StatusTable, ops: FakeOps, clock: FakeClock) -> None:
    pool = make_pool(table, ops, clock, worker_processes=1)
    pool.fill()
    pool.stop_all(fast=True, deadline=clock.now + 5)
    assert ops.sent(pool.slots[0].pid) == ["SIGQUIT"] and pool.slots[0].state is SlotState.STOPPING


def test_a_failed_fork_backs_off(table: StatusTable, ops: FakeOps, clock: FakeClock) -> None:
    pool = make_pool(table, ops, clock, worker_processes=1)
    ops.fail_spawn = True
    pool.fill()
    assert pool.slots[0].state is SlotState.BACKOFF
    ops.fail_spawn = False
    clock.advance(10)
    pool.fill()
    assert state_of(pool.slots[0]) is SlotState.STARTING


def test_control_area_carries_pause_and_cap_also_to_new_workers(
    table: StatusTable, ops: FakeOps, clock: FakeClock
) -> None:
    pool = make_pool(table, ops, clock, worker_processes=1)
    pool.fill()
    pool.set_control(intake_paused=True, concurrency_cap=4)
    assert table.read(0).intake_paused and table.read(0).concurrency_cap == 4
    ops.exit(pool.slots[0].pid, sig=signal.SIGKILL)
    reap(pool, ops)
    snap = table.read(0)
    assert snap.intake_paused and snap.concurrency_cap == 4


def test_unknown_pids_are_not_ours(table: StatusTable, ops: FakeOps, clock: FakeClock) -> None:
    pool = make_pool(table, ops, clock)
    assert pool.on_exit(9999, 0) is False


def test_max_tasks_target_has_jitter(table: StatusTable, ops: FakeOps, clock: FakeClock) -> None:
    pool = make_pool(table, ops, clock, worker_processes=1, worker_max_tasks=100)
    pool.fill()
    assert 100 <= pool.slots[0].max_tasks <= 110


def test_counts_of_a_killed_worker_stay_in_the_totals(
    table: StatusTable, ops: FakeOps, clock: FakeClock
) -> None:
    pool = running_pool(table, ops, clock)
    victim = pool.slots[1]
    writer = table.writer(1)
    writer.task_finished(writer.task_started("a"), ok=True, tokens=5, processing_ms=100.0)
    writer.task_finished(writer.task_started("b"), ok=False, code_index=2)
    writer.add(model_calls=2, model_errors=1, kafka_errors=3)
    before = pool.counters.totals(table.read(i) for i in range(table.slots))
    clock.advance(60)
    ops.exit(victim.pid, sig=signal.SIGKILL)
    reap(pool, ops)
    assert victim.state is SlotState.STARTING and table.read(1).done == 0  # the record starts afresh
    after = pool.counters.totals(table.read(i) for i in range(table.slots))
    assert after.counts == before.counts
    assert after.counts["done"] == 1 and after.counts["failed"] == 1 and after.counts["tokens_used"] == 5
    assert after.failed_by_code[2] == 1 and sum(after.buckets) == 1
    table.writer(1).task_finished(table.writer(1).task_started("c"), ok=True, processing_ms=50.0)
    assert pool.counters.totals(table.read(i) for i in range(table.slots)).counts["done"] == 2


def test_a_worker_killed_holding_messages_charges_them_a_death(
    table: StatusTable, ops: FakeOps, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    pool = running_pool(table, ops, clock)
    reader = table.writer(0).ledger
    for round_ in (1, 2):
        victim = pool.slots[1]
        table.writer(1).held.start("tasks", 3, 41)
        clock.advance(60)
        ops.exit(victim.pid, sig=signal.SIGKILL)
        reap(pool, ops)
        assert reader.deaths("tasks", 3, 41) == round_
        report_running(table, pool, clock)
    assert "its next delivery is quarantined (POISON)" in caplog.text


def test_exits_the_message_did_not_cause_charge_no_death(
    table: StatusTable, ops: FakeOps, clock: FakeClock
) -> None:
    pool = running_pool(table, ops, clock)
    reader = table.writer(0).ledger
    table.writer(0).held.start("tasks", 0, 5)
    ops.exit(pool.slots[0].pid, code=exit_codes.CRASHED)  # a Python-level crash, not a kill
    reap(pool, ops)
    table.writer(1).held.start("tasks", 0, 6)
    pool.drain(pool.slots[1], StopReason.RECYCLE)
    clock.advance(31)
    pool.escalate()  # a slow call past the drain deadline: SIGKILL, not the message's fault
    ops.exit(pool.slots[1].pid, sig=signal.SIGKILL)
    reap(pool, ops)
    assert reader.deaths("tasks", 0, 5) == 0 and reader.deaths("tasks", 0, 6) == 0
