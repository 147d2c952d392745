"""Places: how many tasks may do their model work (input read, model call, result write) at once
(``WORKER_MAX_CONCURRENT_TASKS``), and the tasks that get ready ahead of a place.

A task thread holds a :class:`Ticket` from its start to its end. The ticket is, in turn:

* **ahead** (preparing, then ready): the task takes its lease, looks for its final-status marker
  and publishes RECEIVED without a place, while every place is taken; at most ``prepare_at_once``
  tasks prepare at a time, so that this work stays in the background of the tasks that hold places
  (it competes with them for the GIL). A ready task waits for a place and gets the next one before
  any task that has not started yet;
* **placed**: from the input read through the model call, until the model answers (a task that
  fails gives its place back once its FAILED status is queued). At most ``limit`` tickets are placed
  (the consumer loop sets the limit every turn: the capacity, lowered by the supervisor's cap, the
  breaker or a budget). A task that starts while a place is free and no ready task waits for one
  takes it at once and prepares inside it. A placed task is *on its way* until its model request
  goes out or it first waits (a retry, a breaker, a budget): see "giving way" below;
* **past its place**: the model has answered; the result write, the final status, its
  acknowledgement and the final-status marker are left (:meth:`Ticket.release`). At most
  ``most_past`` tickets are past their place at once: should S3 or the broker stall, tasks keep their
  places instead and the worker stops starting tasks rather than pile up model answers it cannot
  write or statuses that cannot go out.

Why ahead: when many places free up together (tasks of one latency finish together), each new task
used to do its marker lookup and its RECEIVED inside its place, all at once, on one GIL; a place
then stayed empty for a few hundred milliseconds. Measured in docs/worker.md, "Places".

Giving way (:meth:`Ticket.give_way`): the work that does not hold a model call back (a ready-ahead
task's preparation, as soon as it gets its turn; a past task's result write and marker write)
waits, up to :data:`GIVE_WAY_S`, while any placed task is still on its way to its model request.
The process has one GIL and the host two cores; when a wave of tasks ends together, the tasks that
start their model calls then go first, and the finished ones write after them. Measured in
docs/worker.md, "Places".

The consumer loop starts a message only while fewer than ``limit`` + its ahead allowance tickets are
short of their place (:meth:`Places.claims`). Everything here is under one lock. Places and turns
are handed over in order (ready tasks first, then new ones, each first come first served): tasks
that polled for a free place every 0.1 s overtook each other, and a task's p99 from RECEIVED to its
final status was 6.0 s against 2.1 s in order (640 tasks, C = 64, L = 1 s). A waiting task looks
at its context when the consumer loop wakes every waiter (:meth:`Places.wake_all`: a stop, a drain,
a revocation) and every :data:`CHECK_S`.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from llm_service.errors import ShutdownRequested

PREPARE_AT_ONCE = 4  # ahead tasks preparing at a time (1, 4, 8 and unbounded measured: docs/worker.md)
CHECK_S = 1.0  # a waiting task looks at its context at least this often (wake_all is the fast way)
GIVE_WAY_S = 0.1  # the longest one step of background work waits for tasks on their way (0.05-0.3 measured)


class TaskChecks(Protocol):
    """What a waiting task looks at (``TaskContext`` in llm_worker/task_context.py)."""

    @property
    def draining(self) -> bool: ...
    @property
    def revoking(self) -> bool: ...
    def check(self, *, owned: bool = True) -> None: ...


class _State(enum.Enum):
    NEW = "new"  # started by the loop, waiting to enter (or handed back while it waited)
    PREPARING = "preparing"  # ahead, using one of the prepare_at_once turns
    READY = "ready"  # ahead, prepared, waiting for a place
    PLACED = "placed"
    PAST = "past"  # gave its place back: the model answered, or its FAILED status is queued
    CLOSED = "closed"  # its thread ended


class Places:
    """The worker's places; thread-safe. Built by the consumer loop, one per worker."""

    def __init__(
        self,
        *,
        most_past: int,
        on_take: Callable[[], None] = lambda: None,
        on_leave: Callable[[], None] = lambda: None,
        on_freed: Callable[[], None] = lambda: None,
        prepare_at_once: int = PREPARE_AT_ONCE,
    ) -> None:
        self._lock = threading.Lock()
        self._most_past = most_past
        self._on_take = on_take  # the status table's in_flight counts placed tasks
        self._on_leave = on_leave
        self._on_freed = on_freed  # wakes the consumer loop: it may start the next message
        self._prepare_at_once = prepare_at_once
        self._limit = 0
        self._claims = 0  # tickets short of their place: new, preparing, ready or placed
        self._placed = 0
        self._preparing = 0
        self._past = 0
        self._on_way = 0  # placed tickets whose model request has not gone out yet
        self._way_clear = threading.Condition(self._lock)
        self._ready: deque[Ticket] = deque()  # prepared, waiting for a place, in order
        self._entering: deque[Ticket] = deque()  # waiting for a place or a turn, in order

    def set_limit(self, places: int) -> None:
        """Consumer loop, every turn: how many tasks may hold a place now."""
        with self._lock:
            self._limit = places
            self._grant()

    def ticket(self) -> Ticket:
        """Consumer loop: a message starts; it claims a place (or a wait for one) from now on."""
        ticket = Ticket(self)
        with self._lock:
            self._claims += 1
        return ticket

    def wake_all(self) -> None:
        """Consumer loop, on a stop, a drain or a revocation: every waiting task looks at its context."""
        with self._lock:
            for ticket in (*self._ready, *self._entering):
                ticket._cv.notify()

    def claims(self) -> int:
        with self._lock:
            return self._claims

    def placed(self) -> int:
        with self._lock:
            return self._placed

    def waiting(self) -> tuple[int, int]:
        """(ready tasks waiting for a place, tasks waiting to enter)."""
        with self._lock:
            return len(self._ready), len(self._entering)

    def on_way(self) -> int:
        """Placed tasks whose model request has not gone out yet."""
        with self._lock:
            return self._on_way

    def _grant(self) -> None:
        """Hand free places and turns over, in order; under the lock after anything was freed."""
        while self._ready and self._placed < self._limit:
            self._ready.popleft()._granted(_State.PLACED)
            self._placed += 1
        while self._entering:
            if self._placed < self._limit and not self._ready:
                self._placed += 1
                self._entering.popleft()._granted(_State.PLACED)
            elif self._preparing < self._prepare_at_once:
                self._preparing += 1
                self._entering.popleft()._granted(_State.PREPARING)
            else:
                return

    def _place_freed(self) -> None:
        self._placed -= 1
        self._grant()

    def _wait_way_clear(self, most_s: float) -> None:
        """Under the lock: wait up to ``most_s`` until no placed task is on its way to its model call."""
        self._way_clear.wait_for(lambda: self._on_way == 0, most_s)

    def _arrived(self) -> None:
        """A ticket on its way is no longer (under the lock)."""
        self._on_way -= 1
        if self._on_way == 0:
            self._way_clear.notify_all()


class Ticket:
    """One task's claim on a place; used by its thread only (through its TaskContext)."""

    def __init__(self, places: Places) -> None:
        self._places = places
        self._state = _State.NEW
        self._cv = threading.Condition(places._lock)
        self._on_way = False  # placed, its model request not out yet

    @property
    def placed(self) -> bool:
        return self._state is _State.PLACED

    def enter(self, ctx: TaskChecks) -> None:
        """Before the task's first step: take a free place, else a turn to prepare ahead; waits for
        either. Raises ShutdownRequested (the task is handed back) on a stop, drain or revocation.
        With a turn, it gives way first: preparing ahead is background work."""
        p = self._places
        with p._lock:
            p._entering.append(self)
            p._grant()
            self._await(ctx, _State.NEW, p._entering)
            if self._state is _State.PREPARING:
                p._wait_way_clear(GIVE_WAY_S)
        if self._state is _State.PLACED:
            p._on_take()

    def take_place(self, ctx: TaskChecks) -> None:
        """Before the task's input read: wait for a place unless it holds one. Raises
        ShutdownRequested (the task is handed back) on a stop, drain or revocation."""
        if self._state in (_State.PLACED, _State.PAST):
            return  # it holds one, or its model work is done
        p = self._places
        with p._lock:
            if self._state is _State.PREPARING:
                p._preparing -= 1  # its turn goes to the next task waiting to enter
            self._state = _State.READY
            p._ready.append(self)
            p._grant()
            self._await(ctx, _State.READY, p._ready)
        p._on_take()

    def under_way(self) -> None:
        """The task's model request goes out now, or it waits in its place: it no longer holds the
        others' background work back. Once; later calls do nothing."""
        p = self._places
        with p._lock:
            self._arrive()

    def give_way(self, most_s: float | None = None) -> None:
        """Background work of this task (preparing ahead, writing past its place): wait up to
        ``most_s`` (:data:`GIVE_WAY_S`) while any placed task is on its way to its model request."""
        p = self._places
        with p._lock:
            if not self._on_way:  # a task on its way never waits for itself
                p._wait_way_clear(GIVE_WAY_S if most_s is None else most_s)

    def release(self) -> bool:
        """The model has answered (or the task's FAILED status is queued): give the place back early.
        False (the task keeps its place) unless it holds one and fewer than ``most_past`` tasks are
        past theirs."""
        p = self._places
        with p._lock:
            self._arrive()  # kept or not, the place no longer leads to a model request
            if self._state is not _State.PLACED or p._past >= p._most_past:
                return False
            self._state = _State.PAST
            p._claims -= 1
            p._past += 1
            handed_on = bool(p._ready)
            p._place_freed()
        p._on_leave()
        if not handed_on:
            # Nobody was ready for the place: the loop should start a message now. A place handed to a
            # ready task needs no wake-up (the loop tops the ready tasks up at its next completion).
            p._on_freed()
        return True

    def close(self) -> None:
        """The task's thread ends: give back whatever the ticket still holds. Once; later calls do nothing."""
        p = self._places
        with p._lock:
            state, self._state = self._state, _State.CLOSED
            if state is _State.CLOSED:
                return
            if state is _State.PAST:
                p._past -= 1
                return
            p._claims -= 1
            if state is _State.PREPARING:
                p._preparing -= 1
                p._grant()
            elif state is _State.PLACED:
                self._arrive()
                p._place_freed()
        if state is _State.PLACED:
            p._on_leave()

    def _granted(self, state: _State) -> None:
        """Places: this ticket got a place or a turn (under the lock; it was taken off its queue)."""
        self._state = state
        if state is _State.PLACED:
            self._on_way = True
            self._places._on_way += 1
        self._cv.notify()

    def _arrive(self) -> None:
        """Under the lock: no longer on its way (its model request went out, it waits, or it left)."""
        if self._on_way:
            self._on_way = False
            self._places._arrived()

    def _await(self, ctx: TaskChecks, waiting: _State, queue: deque[Ticket]) -> None:
        """Under the lock: wait until granted; on a stop, drain or revocation leave the queue and raise."""
        try:
            while self._state is waiting:
                _check(ctx)
                self._cv.wait(CHECK_S)
        except ShutdownRequested:
            queue.remove(self)
            raise


def _check(ctx: TaskChecks) -> None:
    """A task that merely waits for a place or a turn hands itself back on a stop, a revocation or a
    drain (the drain finishes the tasks in places; these have not started their model work)."""
    ctx.check()
    if ctx.draining or ctx.revoking:
        raise ShutdownRequested("a task waiting for a place is handed back (drain or revocation)")
