"""The status table's read side when its writer misbehaves: a read always ends, a bad slot is stale.

Real shared memory and, for the dead writer, a real process killed with SIGKILL in the middle of a
write. Each read runs in a thread joined with a generous deadline, so a read that spins fails the test
instead of hanging the run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import struct
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

import pytest

from llm_service.errors import StaleRecordError
from llm_service.status_table import SlotSnapshot, StatusTable, WorkerState

FORK = multiprocessing.get_context("fork")


def outcome_of(read: Callable[[], SlotSnapshot]) -> SlotSnapshot | BaseException:
    """Run ``read`` in a thread; fail the test if it has not returned or raised within 30 s."""
    result: list[SlotSnapshot | BaseException] = []

    def run() -> None:
        try:
            result.append(read())
        except BaseException as exc:  # handed to the test, which asserts on it
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert result, "StatusTable.read() did not return: it spins on the sequence counter"
    return result[0]


def _die_mid_write(table: StatusTable, ready: Connection) -> None:
    writer = table.writer(0)
    writer.update(pid=os.getpid(), state=WorkerState.RUNNING, heartbeat=1.0)
    writer._begin()  # the sequence counter is odd now: a write is under way
    ready.send("mid-write")
    signal.pause()


def test_a_writer_killed_mid_write_leaves_a_stale_slot_not_a_spinning_reader(table: StatusTable) -> None:
    ours, theirs = FORK.Pipe()
    child = FORK.Process(target=_die_mid_write, args=(table, theirs))
    child.start()
    assert ours.poll(30) and ours.recv() == "mid-write"
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    outcome = outcome_of(lambda: table.read(0))
    assert isinstance(outcome, StaleRecordError) and "mid-write" in str(outcome)
    assert table.read(1).state is WorkerState.EMPTY  # the other slots read as usual
    table.clear(0)  # what the supervisor does before a new worker takes the slot
    assert table.read(0).pid == 0


def test_a_writer_that_raised_mid_write_leaves_a_stale_slot(table: StatusTable) -> None:
    writer = table.writer(0)
    writer.update(pid=7, state=WorkerState.RUNNING)
    with pytest.raises(struct.error):
        writer.update(heartbeat=2.0, in_flight=-1)  # does not fit its unsigned field
    assert isinstance(outcome_of(lambda: table.read(0)), StaleRecordError)


def test_a_value_outside_its_field_makes_the_slot_stale(table: StatusTable) -> None:
    table.writer(0).update(pid=7, state=200)  # fits the byte, names no WorkerState
    outcome = outcome_of(lambda: table.read(0))
    assert isinstance(outcome, StaleRecordError) and "outside its field" in str(outcome)
