from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from llm_service.status_table import (
    FAILURE_CODE_COUNTERS,
    MAX_TRACKED_TASKS,
    PROCESSING_BUCKETS_S,
    Stage,
    StatusTable,
    WorkerControl,
    WorkerState,
)
from llm_worker.error_codes import COUNTED, counted_index

FORK = multiprocessing.get_context("fork")


def test_worker_writes_and_supervisor_reads(table: StatusTable) -> None:
    writer = table.writer(1)
    writer.update(pid=4242, state=WorkerState.RUNNING, capacity=8)
    writer.heartbeat()
    entry = writer.task_started("task-a")
    writer.task_took_place()
    writer.task_stage(entry, Stage.CALLING_MODEL)
    snap = table.read(1)
    assert (snap.pid, snap.state, snap.capacity, snap.in_flight) == (4242, WorkerState.RUNNING, 8, 1)
    assert [(t.task_id, t.stage) for t in snap.tasks] == [("task-a", Stage.CALLING_MODEL)]
    assert snap.heartbeat_age() < 5
    writer.task_left_place()
    writer.task_finished(entry, ok=True, tokens=100, processing_ms=200.0)
    second = writer.task_started("task-b")
    writer.task_finished(second, ok=True, tokens=50, processing_ms=400.0)
    snap = table.read(1)
    assert (snap.in_flight, snap.done, snap.failed, snap.tokens_used) == (0, 2, 0, 150)
    assert snap.avg_processing_ms == pytest.approx(300.0)
    assert snap.last_processing_ms == pytest.approx(400.0)
    assert snap.tasks == ()
    assert table.read(0).pid == 0  # other slots untouched


def test_in_flight_counts_tasks_holding_a_place_and_the_list_shows_every_task(table: StatusTable) -> None:
    writer = table.writer(0)
    first, second = writer.task_started("a"), writer.task_started("b")  # "b" gets ready ahead of a place
    writer.task_took_place()  # "a"
    assert (table.read(0).in_flight, [t.task_id for t in table.read(0).tasks]) == (1, ["a", "b"])
    writer.task_stage(first, Stage.PUBLISHING)
    writer.task_left_place()  # "a" waits for its acknowledgement outside its place
    writer.task_took_place()  # "b"
    snap = table.read(0)
    assert snap.in_flight == 1 and [t.task_id for t in snap.tasks] == ["a", "b"]
    writer.task_finished(first, ok=True, tokens=5, processing_ms=10.0)
    snap = table.read(0)
    assert (snap.in_flight, snap.done, [t.task_id for t in snap.tasks]) == (1, 1, ["b"])  # "b" still counts
    writer.task_left_place()
    writer.task_dropped(second)
    assert (table.read(0).in_flight, table.read(0).tasks) == (0, ())


def test_control_area_reaches_the_worker(table: StatusTable) -> None:
    control = table.control(2)
    control.pause_intake(True)
    control.cap_concurrency(3)
    assert table.writer(2).control() == WorkerControl(intake_paused=True, drain=False, concurrency_cap=3)
    control.request_drain()
    control.pause_intake(False)
    assert table.writer(2).control() == WorkerControl(intake_paused=False, drain=True, concurrency_cap=3)


def test_more_tasks_than_tracked_are_still_counted(table: StatusTable) -> None:
    writer = table.writer(0)
    entries = [writer.task_started(f"t{i}") for i in range(MAX_TRACKED_TASKS + 2)]
    for _ in entries:
        writer.task_took_place()
    assert entries[-1] == -1
    snap = table.read(0)
    assert snap.in_flight == MAX_TRACKED_TASKS + 2
    assert len(snap.tasks) == MAX_TRACKED_TASKS


def _hammer(table: StatusTable, slot: int, stop_after: float) -> None:
    writer = table.writer(slot)
    end = time.monotonic() + stop_after
    i = 0
    while time.monotonic() < end:
        i += 1
        writer.update(done=i, failed=i, tokens_used=i * 7)
        # ~10,000 writes a second, far more than a worker makes, with gaps a read can fall into: a
        # writer with none let a read through only by luck, so the reads > 100 check failed at random.
        time.sleep(0.0001)


def test_reads_are_consistent_while_another_process_writes(table: StatusTable) -> None:
    child = FORK.Process(target=_hammer, args=(table, 0, 1.5))
    child.start()
    reads = 0
    deadline = time.monotonic() + 1.4
    while time.monotonic() < deadline:
        snap = table.read(0)
        assert snap.done == snap.failed and snap.tokens_used == snap.done * 7, "torn read"
        reads += 1
    child.join(5)
    assert child.exitcode == 0
    assert reads > 100 and table.read(0).done > 100


def _hold_tasks_then_hang(table: StatusTable) -> None:
    writer = table.writer(1)
    writer.update(pid=os.getpid(), state=WorkerState.RUNNING)
    for name in ("x-1", "x-2"):
        writer.task_stage(writer.task_started(name), Stage.WRITING_RESULT)
    time.sleep(60)


def test_record_survives_a_killed_worker(table: StatusTable) -> None:
    child = FORK.Process(target=_hold_tasks_then_hang, args=(table,))
    child.start()
    deadline = time.monotonic() + 10
    while table.read(1).in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(5)
    snap = table.read(1)
    assert snap.pid == child.pid
    assert sorted(t.task_id for t in snap.tasks) == ["x-1", "x-2"]
    assert {t.stage for t in snap.tasks} == {Stage.WRITING_RESULT}
    table.clear(1)
    assert table.read(1).tasks == ()


def test_processing_histogram_and_failure_codes_are_counted(table: StatusTable) -> None:
    writer = table.writer(0)
    for ms in (100.0, 700.0, 700.0, 3_600_000.0):  # 0.1 s, 0.7 s twice, an hour (+Inf)
        writer.task_finished(writer.task_started("t"), ok=True, processing_ms=ms)
    writer.task_finished(writer.task_started("f"), ok=False, code_index=3)
    writer.task_rejected(code_index=3)
    writer.task_rejected(code_index=FAILURE_CODE_COUNTERS)  # out of range: counted as failed only
    writer.add(model_calls=5, model_errors=2)
    snap = table.read(0)
    assert len(snap.processing_buckets) == len(PROCESSING_BUCKETS_S) + 1
    assert (snap.processing_buckets[0], snap.processing_buckets[1], snap.processing_buckets[-1]) == (1, 2, 1)
    assert sum(snap.processing_buckets) == snap.done == 4
    assert snap.processing_s_sum == pytest.approx(0.1 + 1.4 + 3600)
    assert snap.failed == 3 and snap.failed_by_code[3] == 2 and sum(snap.failed_by_code) == 2
    assert (snap.model_calls, snap.model_errors) == (5, 2)


def test_every_counted_error_code_has_a_counter() -> None:
    assert len(COUNTED) <= FAILURE_CODE_COUNTERS
    assert COUNTED[-1] == "OTHER" and counted_index("NO_SUCH_CODE") == len(COUNTED) - 1
    assert COUNTED[counted_index("INPUT_NOT_FOUND")] == "INPUT_NOT_FOUND"
