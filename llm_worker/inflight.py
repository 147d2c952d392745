"""Messages a worker holds: taken from Kafka, waiting for a task thread, running, or finished but not
yet committed.

A running message's thread counts as running until it completes, whether or not it holds a place
(llm_worker/places.py): drains and revocations wait for it, commits follow it.

Shared by three threads, so every method takes the lock and returns quickly; none calls Kafka:

* the consumer thread takes messages in, starts them, collects completions and commits;
* task threads report completions (:meth:`InFlight.complete`, lock-free: a queue);
* kafka-python's IO thread, in the rebalance listener, collects completions and drops partitions
  while the consumer thread is blocked inside ``poll``.
"""

from __future__ import annotations

import enum
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from llm_worker.offsets import OffsetTracker
from llm_worker.task_context import Outcome

P = TypeVar("P", bound=Hashable)
R = TypeVar("R")


class Verdict(enum.Enum):
    """What the collected completions mean for the consumer thread."""

    OK = "ok"
    # A task came back unfinished from a partition we still hold while not stopping: its offset can
    # never be committed and would block the partition. Only a restart (redelivery) clears that.
    STUCK = "stuck"


@dataclass(frozen=True)
class Held(Generic[P, R]):
    """A message taken from Kafka, with the ownership epoch of its partition at that time."""

    partition: P
    offset: int
    epoch: int
    record: R


@dataclass(frozen=True)
class Completion(Generic[P]):
    partition: P
    offset: int
    epoch: int
    outcome: Outcome


# Queued beside completions by wake(): wakes a consumer loop waiting for a free place.
_WAKE = object()


class InFlight(Generic[P, R]):
    """The worker's held messages; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracker: OffsetTracker[P] = OffsetTracker()
        self._backlog: deque[Held[P, R]] = deque()  # taken beyond capacity, not started yet
        self._running: Counter[P] = Counter()
        self._completions: queue.SimpleQueue[Completion[P] | object] = queue.SimpleQueue()
        self._stopping = False
        self._alone: tuple[P, int, int] | None = None  # a suspect message running with nothing beside it
        self._revoking: frozenset[P] = frozenset()  # partitions being revoked: waiting tasks hand back

    def take(self, partition: P, offset: int, record: R, taken_at: float) -> Held[P, R] | None:
        """Track a fetched message and queue it in the backlog; None for a re-delivery already held."""
        with self._lock:
            epoch = self._tracker.take(partition, offset, taken_at)
            if epoch is None:
                return None
            held = Held(partition, offset, epoch, record)
            self._backlog.append(held)
            return held

    def next_to_start(
        self, run_alone: Callable[[Held[P, R]], bool] = lambda held: False
    ) -> Held[P, R] | None:
        """Pop the oldest backlog message and count it as running (the caller submits it).

        A message for which ``run_alone`` is true (one that a dead worker held) starts only when
        nothing else runs, and nothing starts beside it: should it kill this worker too, the death is
        charged to it alone, not to innocent neighbours (llm_service/message_ledger.py).
        """
        with self._lock:
            if not self._backlog or self._alone is not None:
                return None
            held = self._backlog[0]
            if run_alone(held):
                if sum(self._running.values()) > 0:
                    return None
                self._alone = (held.partition, held.offset, held.epoch)
            self._backlog.popleft()
            self._running[held.partition] += 1
            return held

    def wake(self) -> None:
        """Any thread: wake a consumer loop waiting for a completion (a place was freed)."""
        self._completions.put(_WAKE)

    def complete(self, completion: Completion[P]) -> None:
        """Task thread: report a finished (or handed back) message. Never blocks."""
        self._completions.put(completion)

    def wait_completion(self, timeout: float) -> None:
        """Block until a completion arrives or ``timeout`` passes; leaves it queued for :meth:`collect`."""
        try:
            completion = self._completions.get(timeout=timeout)
        except queue.Empty:
            return
        self._completions.put(completion)  # order among completions does not matter

    def collect(self) -> Verdict:
        """Apply queued completions to the offsets; STUCK when one can never be committed."""
        verdict = Verdict.OK
        with self._lock:
            while True:
                try:
                    done = self._completions.get_nowait()
                except queue.Empty:
                    return verdict
                if not isinstance(done, Completion):
                    continue  # a wake-up (a place freed), not a completion
                self._running[done.partition] -= 1
                if self._alone == (done.partition, done.offset, done.epoch):
                    self._alone = None
                if done.outcome is Outcome.DONE:
                    self._tracker.finish(done.partition, done.offset, done.epoch)
                elif (
                    self._tracker.epoch(done.partition) == done.epoch
                    and not self._stopping
                    and done.partition not in self._revoking  # a task that waited hands back then
                ):
                    verdict = Verdict.STUCK

    def assigned(self, partitions: Iterable[P]) -> None:
        """Partitions just assigned: their ownership (and its fence, llm_worker/offsets.py) starts now."""
        with self._lock:
            self._tracker.assigned(partitions)

    def unfenced(self) -> list[tuple[P, int]]:
        with self._lock:
            return self._tracker.unfenced()

    def fence(self, partition: P, epoch: int, end_offset: int) -> None:
        with self._lock:
            self._tracker.fence(partition, epoch, end_offset)

    def first_delivery(self, held: Held[P, R]) -> bool:
        """No process started this message before (llm_worker/offsets.py); any thread."""
        with self._lock:
            return self._tracker.first_delivery(held.partition, held.offset, held.epoch)

    def owns(self, partition: P, epoch: int) -> bool:
        """Whether the message's partition is still held in the same ownership. Any thread, lock-free."""
        return self._tracker.epoch(partition) == epoch

    def to_commit(self, partitions: Iterable[P] | None = None) -> dict[P, int]:
        with self._lock:
            return self._tracker.to_commit(partitions)

    def committed(self, positions: dict[P, int]) -> None:
        with self._lock:
            self._tracker.committed(positions)

    def drop_backlog(self, partitions: Iterable[P]) -> int:
        """Forget not-yet-started messages of these partitions (they stay uncommitted: redelivered)."""
        gone = set(partitions)
        with self._lock:
            kept = deque(h for h in self._backlog if h.partition not in gone)
            dropped = len(self._backlog) - len(kept)
            self._backlog = kept
            return dropped

    def revoking(self, partitions: Iterable[P]) -> None:
        """The rebalance listener is giving these partitions up: their tasks that merely wait (for a
        place, llm_worker/places.py) hand back at once instead of being waited for."""
        with self._lock:
            self._revoking = self._revoking | set(partitions)

    def being_revoked(self, partition: P) -> bool:
        """Any thread, lock-free."""
        return partition in self._revoking

    def forget(self, partitions: Iterable[P]) -> None:
        """Give partitions up: drop their backlog and offsets; their running tasks see ``owns`` False."""
        partitions = list(partitions)
        self.drop_backlog(partitions)
        with self._lock:
            self._tracker.forget(partitions)
            self._revoking = self._revoking - set(partitions)

    def stopping(self) -> None:
        """From now on, tasks handed back are expected (the worker stops), not a stuck partition."""
        with self._lock:
            self._stopping = True

    def running(self, partitions: Iterable[P] | None = None) -> int:
        """Messages whose task thread has not completed yet."""
        with self._lock:
            if partitions is None:
                return sum(self._running.values())
            return sum(self._running[p] for p in partitions)

    def backlog(self) -> int:
        with self._lock:
            return len(self._backlog)

    def oldest_taken_at(self) -> float | None:
        with self._lock:
            return self._tracker.oldest_taken_at()
