"""Held messages: backlog, running counts, completions, and what revocation does to them."""

from __future__ import annotations

import time

from llm_worker.inflight import Completion, InFlight, Verdict
from llm_worker.task_context import Outcome


def started_one() -> tuple[InFlight[str, str], int]:
    """A fresh InFlight with offset 0 of partition p taken and started (running); and its epoch."""
    held: InFlight[str, str] = InFlight()
    taken = held.take("p", 0, "r", 1.0)
    assert taken is not None
    held.next_to_start()
    return held, taken.epoch


def test_completions_move_the_commit_position_and_the_running_count() -> None:
    held: InFlight[str, str] = InFlight()
    first = held.take("p", 0, "r0", 1.0)
    second = held.take("p", 1, "r1", 2.0)
    assert first is not None and second is not None and held.take("p", 1, "dup", 3.0) is None
    assert held.backlog() == 2
    assert held.next_to_start() == first and held.next_to_start() == second and held.next_to_start() is None
    assert held.running() == 2 and held.running(["p"]) == 2 and held.running(["q"]) == 0

    held.complete(Completion("p", 1, second.epoch, Outcome.DONE))
    assert held.collect() is Verdict.OK
    assert held.to_commit() == {} and held.running() == 1  # offset 0 still runs
    held.complete(Completion("p", 0, first.epoch, Outcome.DONE))
    held.collect()
    assert held.to_commit() == {"p": 2}
    held.committed({"p": 2})
    assert held.to_commit() == {} and held.oldest_taken_at() is None


def test_a_task_handed_back_from_a_held_partition_is_stuck_unless_stopping() -> None:
    held, epoch = started_one()
    held.complete(Completion("p", 0, epoch, Outcome.HANDED_BACK))
    assert held.collect() is Verdict.STUCK

    stopping, epoch = started_one()
    stopping.stopping()
    stopping.complete(Completion("p", 0, epoch, Outcome.HANDED_BACK))
    assert stopping.collect() is Verdict.OK


def test_forgetting_a_partition_drops_its_backlog_and_fences_its_running_tasks() -> None:
    held: InFlight[str, str] = InFlight()
    running = held.take("p", 0, "r0", 1.0)
    held.take("p", 1, "r1", 1.0)
    held.take("q", 0, "q0", 1.0)
    assert running is not None
    held.next_to_start()
    assert held.owns("p", running.epoch)

    held.forget(["p"])
    assert not held.owns("p", running.epoch)
    assert held.backlog() == 1  # only q's message is left to start
    held.complete(Completion("p", 0, running.epoch, Outcome.HANDED_BACK))
    assert held.collect() is Verdict.OK  # handed back from a partition we no longer hold: expected
    assert held.running() == 0 and held.to_commit() == {}


def test_wait_completion_returns_early_and_leaves_the_completion_queued() -> None:
    held, epoch = started_one()
    held.complete(Completion("p", 0, epoch, Outcome.DONE))
    held.wait_completion(5.0)  # returns at once: a completion is there
    held.collect()
    assert held.to_commit() == {"p": 1}


def test_a_suspect_message_starts_only_when_nothing_runs_and_runs_alone() -> None:
    held: InFlight[str, str] = InFlight()
    innocent = held.take("p", 0, "r0", 1.0)
    suspect = held.take("p", 1, "r1", 1.0)
    after = held.take("p", 2, "r2", 1.0)
    assert innocent is not None and suspect is not None and after is not None

    def alone(h: object) -> bool:
        return h == suspect

    assert held.next_to_start(alone) == innocent
    assert held.next_to_start(alone) is None, "the suspect waits while another message runs"
    held.complete(Completion("p", 0, innocent.epoch, Outcome.DONE))
    held.collect()
    assert held.next_to_start(alone) == suspect
    assert held.next_to_start(alone) is None, "nothing starts beside the suspect"
    held.complete(Completion("p", 1, suspect.epoch, Outcome.DONE))
    held.collect()
    assert held.next_to_start(alone) == after


def test_a_wake_up_returns_a_waiting_loop_without_counting_as_a_completion() -> None:
    held: InFlight[str, str] = InFlight()
    held.take("p", 0, "r0", 1.0)
    first = held.next_to_start()
    assert first is not None
    held.wake()  # a place was freed (llm_worker/places.py)
    started = time.monotonic()
    held.wait_completion(30.0)
    assert time.monotonic() - started < 25.0, "the wake-up did not return the wait"
    assert held.collect() is Verdict.OK and held.running() == 1 and held.to_commit() == {}
    held.complete(Completion("p", 0, first.epoch, Outcome.DONE))
    held.collect()
    assert held.running() == 0 and held.to_commit() == {"p": 1}
