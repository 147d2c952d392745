"""Places and tickets (llm_worker/places.py): who holds a place, who gets ready ahead of one, who is
handed back. Threads with generous deadlines; the real-stack bounds are in tests/worker/test_places.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest

from llm_service.errors import ShutdownRequested
from llm_worker import places as places_module
from llm_worker.places import Places, Ticket
from tests.waiting import wait_until

DEADLINE_S = 30.0


class Checks:
    """A task's context as the tickets see it: stop, revocation and drain are settable."""

    def __init__(self) -> None:
        self.stopped = False
        self.draining = False
        self.revoking = False

    def check(self, *, owned: bool = True) -> None:
        if self.stopped:
            raise ShutdownRequested("stopped")


class Counts:
    def __init__(self) -> None:
        self.in_flight = 0
        self.wakes = 0

    def took(self) -> None:
        self.in_flight += 1

    def left(self) -> None:
        self.in_flight -= 1

    def woke(self) -> None:
        self.wakes += 1


def places(limit: int, *, most_past: int = 8, prepare_at_once: int = 4) -> tuple[Places, Counts]:
    counts = Counts()
    p = Places(
        most_past=most_past,
        on_take=counts.took,
        on_leave=counts.left,
        on_freed=counts.woke,
        prepare_at_once=prepare_at_once,
    )
    p.set_limit(limit)
    return p, counts


@contextmanager
def in_thread(step: Callable[[], None]) -> Iterator[dict[str, object]]:
    """Run ``step`` in a thread; the dict says ``done`` or the ``error`` it raised."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            step()
            out["done"] = True
        except BaseException as exc:  # the test reads it
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        thread.join(timeout=DEADLINE_S)
        assert not thread.is_alive(), "a ticket wait did not end"


def entered(p: Places, ctx: Checks) -> Ticket:
    ticket = p.ticket()
    ticket.enter(ctx)
    return ticket


def test_a_task_takes_a_free_place_at_once_and_gives_it_back_with_its_final_status() -> None:
    p, counts = places(2)
    ctx = Checks()
    ticket = entered(p, ctx)
    assert ticket.placed and p.placed() == 1 and p.claims() == 1 and counts.in_flight == 1
    ticket.take_place(ctx)  # holds one already: nothing to wait for
    assert p.placed() == 1
    assert ticket.release() is True
    assert p.placed() == 0 and p.claims() == 0 and counts.in_flight == 0 and counts.wakes == 1
    assert ticket.release() is False  # once
    ticket.close()
    assert p.placed() == 0 and p.claims() == 0 and counts.in_flight == 0


def test_with_every_place_taken_a_task_gets_ready_ahead_and_waits_for_the_next_place() -> None:
    p, counts = places(1)
    ctx = Checks()
    first = entered(p, ctx)
    ahead = entered(p, ctx)  # a turn to prepare, no place
    assert not ahead.placed and p.placed() == 1 and p.claims() == 2 and counts.in_flight == 1
    with in_thread(lambda: ahead.take_place(ctx)) as out:
        wait_until(lambda: p.waiting()[0] == 1, timeout=DEADLINE_S, what="the task waits, ready")
        assert first.release()
        wait_until(lambda: "done" in out, timeout=DEADLINE_S, what="the ready task took the freed place")
    assert ahead.placed and p.placed() == 1 and counts.in_flight == 1
    assert counts.wakes == 0  # the place went to a ready task: the consumer loop need not wake
    for ticket in (first, ahead):
        ticket.close()
    assert p.placed() == 0 and p.claims() == 0 and counts.in_flight == 0


def test_a_ready_task_gets_the_freed_place_before_a_task_that_has_not_started() -> None:
    p, _ = places(1, prepare_at_once=1)
    ctx = Checks()
    first = entered(p, ctx)
    ready = entered(p, ctx)  # the one turn to prepare
    late = p.ticket()
    with in_thread(lambda: ready.take_place(ctx)) as ready_out:
        wait_until(lambda: p.waiting()[0] == 1, timeout=DEADLINE_S, what="the task waits, ready")
        with in_thread(lambda: late.enter(ctx)) as late_out:
            # The ready task gave its turn back, so the late one prepares; it does not take a place.
            wait_until(lambda: "done" in late_out, timeout=DEADLINE_S, what="the late task entered")
            assert not late.placed
            assert first.release()
            wait_until(lambda: "done" in ready_out, timeout=DEADLINE_S, what="the ready task placed")
    assert ready.placed and not late.placed and p.placed() == 1
    for ticket in (first, ready, late):
        ticket.close()
    assert p.placed() == 0 and p.claims() == 0


def test_at_most_prepare_at_once_tasks_get_ready_ahead_together() -> None:
    p, _ = places(1, prepare_at_once=2)
    ctx = Checks()
    placed = entered(p, ctx)
    one, two = entered(p, ctx), entered(p, ctx)
    third = p.ticket()
    with in_thread(lambda: third.enter(ctx)) as out:
        wait_until(lambda: p.waiting()[1] == 1, timeout=DEADLINE_S, what="the third task waits")
        assert "done" not in out
        with in_thread(lambda: one.take_place(ctx)):  # done preparing: its turn goes to the third task
            wait_until(lambda: "done" in out, timeout=DEADLINE_S, what="the third task got a turn")
            assert not third.placed
            placed.release()
    for ticket in (placed, one, two, third):
        ticket.close()
    assert p.placed() == 0 and p.claims() == 0


def test_places_given_back_early_are_bounded_so_a_silent_broker_stops_new_tasks() -> None:
    p, counts = places(3, most_past=2)
    ctx = Checks()
    tickets = [entered(p, ctx) for _ in range(3)]
    assert tickets[0].release() and tickets[1].release()
    assert tickets[2].release() is False  # two tasks already wait for their acknowledgements
    assert p.placed() == 1 and counts.in_flight == 1
    tickets[0].close()  # its acknowledgement came: room for one more past its place
    assert tickets[2].release() is True
    for ticket in tickets:
        ticket.close()
    assert p.placed() == 0 and p.claims() == 0 and counts.in_flight == 0


@pytest.mark.parametrize("how", ["stop", "drain", "revocation"])
def test_a_task_waiting_for_a_place_is_handed_back_on_a_stop_a_drain_or_a_revocation(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waiters look at their context only when woken: the test fails unless wake_all wakes them.
    monkeypatch.setattr(places_module, "CHECK_S", 3600.0)
    p, counts = places(1, prepare_at_once=1)
    ctx = Checks()
    first = entered(p, ctx)
    ready = entered(p, ctx)
    waiting = p.ticket()
    with (
        in_thread(lambda: ready.take_place(ctx)) as ready_out,
        in_thread(lambda: waiting.enter(ctx)) as enter_out,
    ):
        wait_until(lambda: p.waiting()[0] == 1, timeout=DEADLINE_S, what="the ready task waits")
        wait_until(lambda: "done" in enter_out, timeout=DEADLINE_S, what="the other took the free turn")
        setattr(ctx, {"stop": "stopped", "drain": "draining", "revocation": "revoking"}[how], True)
        p.wake_all()  # as the consumer loop does
        wait_until(lambda: "error" in ready_out, timeout=DEADLINE_S, what="the waiting task handed back")
    assert isinstance(ready_out["error"], ShutdownRequested)
    for ticket in (ready, waiting):
        ticket.close()
    assert p.placed() == 1 and p.claims() == 1 and counts.in_flight == 1  # the placed task runs on
    first.close()
    assert p.placed() == 0 and p.claims() == 0 and counts.in_flight == 0


def test_a_raised_limit_lets_waiting_tasks_in() -> None:
    p, counts = places(0)
    ctx = Checks()
    ahead = entered(p, ctx)  # no place at all (a spent budget): ready ahead, then waiting
    with in_thread(lambda: ahead.take_place(ctx)) as out:
        wait_until(lambda: p.waiting()[0] == 1, timeout=DEADLINE_S, what="the task waits for a place")
        p.set_limit(1)
        wait_until(lambda: "done" in out, timeout=DEADLINE_S, what="the task took the new place")
    assert ahead.placed and counts.in_flight == 1
    ahead.close()
    assert p.claims() == 0 and counts.in_flight == 0


def test_places_go_to_ready_tasks_in_the_order_they_got_ready() -> None:
    p, _ = places(1, prepare_at_once=3)
    ctx = Checks()
    holder = entered(p, ctx)
    ahead = [entered(p, ctx) for _ in range(3)]
    order: list[int] = []

    def wait_for_place(i: int) -> Callable[[], None]:
        def step() -> None:
            ahead[i].take_place(ctx)
            order.append(i)

        return step

    with ExitStack() as threads:
        for i in range(3):  # each gets ready after the one before
            threads.enter_context(in_thread(wait_for_place(i)))
            wait_until(lambda i=i: p.waiting()[0] == i + 1, timeout=DEADLINE_S, what=f"{i + 1} ready")
        for i, ticket in enumerate([holder, *ahead[:2]]):
            assert ticket.release()
            wait_until(lambda i=i: len(order) == i + 1, timeout=DEADLINE_S, what=f"place {i} handed on")
    assert order == [0, 1, 2]
    for ticket in (holder, *ahead):
        ticket.close()
    assert p.claims() == 0 and p.placed() == 0


def waited_s(step: Callable[[], None]) -> float:
    started = time.monotonic()
    step()
    return time.monotonic() - started


def giving_way(p: Places) -> int:
    """Threads waiting in Places for the way to clear (CPython's Condition lists its waiters)."""
    return len(p._way_clear._waiters)  # type: ignore[attr-defined]


def test_background_work_gives_way_while_a_placed_task_is_on_its_way_to_its_model_call() -> None:
    p, _ = places(2)
    ctx = Checks()
    finished = entered(p, ctx)
    finished.under_way()
    assert finished.release() is True  # the model answered: its result write is background work
    starting = entered(p, ctx)  # placed: on its way until its request goes out
    assert p.on_way() == 1
    # Its longest wait, while the way stays taken (a lower bound: it holds on a busy machine too).
    assert waited_s(lambda: finished.give_way(most_s=0.2)) >= 0.2
    with in_thread(lambda: finished.give_way(most_s=3600)) as out:
        wait_until(lambda: giving_way(p) == 1, timeout=DEADLINE_S, what="the write giving way")
        starting.under_way()
        wait_until(lambda: out.get("done"), timeout=DEADLINE_S, what="the way cleared")
    assert p.on_way() == 0
    starting.under_way()  # once
    assert p.on_way() == 0


def test_giving_way_ends_after_its_longest_wait_and_never_waits_for_itself() -> None:
    p, _ = places(2)
    ctx = Checks()
    starting = entered(p, ctx)
    with in_thread(lambda: starting.give_way(most_s=3600)) as own:  # on its way itself: no wait
        wait_until(lambda: own.get("done"), timeout=DEADLINE_S, what="a task giving way to itself")
    ahead = p.ticket()
    with in_thread(lambda: ahead.give_way(most_s=0.05)) as out:  # a stuck way does not stop it for good
        wait_until(lambda: out.get("done"), timeout=DEADLINE_S, what="the longest wait")
    assert p.on_way() == 1


def test_a_task_leaving_its_place_or_handed_one_is_counted_on_its_way_or_off_it() -> None:
    p, _ = places(1)
    ctx = Checks()
    first = entered(p, ctx)
    failing = p.ticket()
    with in_thread(lambda: failing.enter(ctx)):
        wait_until(lambda: p.waiting() == (0, 0), timeout=DEADLINE_S, what="a turn to prepare ahead")
    with in_thread(lambda: failing.take_place(ctx)) as out:
        wait_until(lambda: p.waiting()[0] == 1, timeout=DEADLINE_S, what="the ready task")
        assert p.on_way() == 1  # only the placed one
        first.close()  # its thread ended in its place (a handed-back task): off its way
        wait_until(lambda: out.get("done"), timeout=DEADLINE_S, what="the place handed on")
    assert failing.placed and p.on_way() == 1  # handed a place: on its way now
    assert failing.release() is True  # a FAILED status queued before any model request
    assert p.on_way() == 0


def test_a_task_with_a_turn_to_prepare_ahead_gives_way_first(monkeypatch: pytest.MonkeyPatch) -> None:
    p, _ = places(1)
    ctx = Checks()
    starting = entered(p, ctx)  # the only place: on its way
    monkeypatch.setattr(places_module, "GIVE_WAY_S", 0.2)
    assert waited_s(lambda: entered(p, ctx)) >= 0.2  # a turn, then its longest wait
    monkeypatch.setattr(places_module, "GIVE_WAY_S", 3600.0)
    ahead = p.ticket()
    with in_thread(lambda: ahead.enter(ctx)) as out:
        wait_until(lambda: giving_way(p) == 1, timeout=DEADLINE_S, what="the turn giving way")
        starting.under_way()
        wait_until(lambda: out.get("done"), timeout=DEADLINE_S, what="the turn, once the way cleared")
    assert not ahead.placed
