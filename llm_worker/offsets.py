"""Which offsets may be committed: per partition, only the contiguous prefix of finished messages.

Tasks finish out of order (a short task overtakes a long one), but a Kafka commit says "everything
before this offset is done". Committing past an unfinished message would lose it on a crash, so each
partition commits up to (not including) its oldest message still in flight.

Each ownership also has a **fence**: the partition's end offset read after it was assigned, before
any of its messages started. Every offset below it may have been started by an earlier owner (a
worker killed mid-task, a host that crashed, a partition moved away mid-call); an offset at or above
it did not exist when the previous owner let go, so this ownership is the first to start it. Such a
message is a *first delivery* once every possible redelivery of the ownership (the offsets below
the fence) has ended: llm_worker/final_status.py then skips its result-exists check. Nothing of this
outlives the ownership, so a restart, a move or another host can never make a stale fence look
valid; the price is that the backlog present at an assignment pays the checks.

Called only from the consumer thread (the rebalance listener calls it while that thread is blocked
inside ``poll``, under ``InFlight._lock`` of llm_worker/inflight.py); not thread-safe on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class PartitionOffsets:
    """Offsets taken from one partition during one ownership of it (``epoch``), in fetch order."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch
        self._pending: deque[tuple[int, float]] = deque()  # (offset, wall time taken), ascending
        self._unfinished: set[int] = set()
        self._finished: set[int] = set()
        self._last_taken = -1
        self._position: int | None = None  # next offset to commit: all before it are finished
        self._committed: int | None = None
        self._first_taken: int | None = None
        self.fence: int | None = None  # end offset after the assignment; None: not read yet

    def first_delivery(self, offset: int) -> bool:
        """No process started ``offset`` before, and every possible redelivery taken here has ended."""
        if self.fence is None or offset < self.fence:
            return False
        ended = self._position if self._position is not None else self._first_taken
        return ended is not None and ended >= self.fence

    def take(self, offset: int, taken_at: float) -> bool:
        """Record a fetched offset; False for one at or below an offset already taken (a re-delivery)."""
        if offset <= self._last_taken:
            return False
        self._last_taken = offset
        if self._first_taken is None:
            self._first_taken = offset
        self._pending.append((offset, taken_at))
        self._unfinished.add(offset)
        return True

    def finish(self, offset: int) -> bool:
        """Mark a taken offset finished; the commit position moves over any finished prefix.

        False (and no change) for an offset that was not taken or is already finished.
        """
        if offset not in self._unfinished:
            return False
        self._unfinished.discard(offset)
        self._finished.add(offset)
        while self._pending and self._pending[0][0] in self._finished:
            done, _ = self._pending.popleft()
            self._finished.discard(done)
            self._position = done + 1
        return True

    def to_commit(self) -> int | None:
        """The position to commit now, or None when it has not moved since the last commit."""
        if self._position is None or self._position == self._committed:
            return None
        return self._position

    def committed(self, position: int) -> None:
        self._committed = position

    @property
    def in_flight(self) -> int:
        """Taken and not yet finished (finished ones behind an unfinished one do not count)."""
        return len(self._unfinished)

    def oldest_taken_at(self) -> float | None:
        return self._pending[0][1] if self._pending else None


class OffsetTracker(Generic[P]):
    """The :class:`PartitionOffsets` of every partition this worker holds, keyed by partition.

    Each time a partition is (re)acquired it gets a new epoch; a completion carries the epoch of the
    message it finishes, so a late completion from an earlier ownership cannot move today's position.
    """

    def __init__(self) -> None:
        self._partitions: dict[P, PartitionOffsets] = {}
        self._epochs = 0

    def take(self, partition: P, offset: int, taken_at: float) -> int | None:
        """Record a fetched message; returns its epoch, or None for a re-delivery already taken."""
        self.assigned([partition])
        offsets = self._partitions[partition]
        return offsets.epoch if offsets.take(offset, taken_at) else None

    def epoch(self, partition: P) -> int | None:
        """The current epoch of a partition, None when not held. Safe to call from any thread."""
        offsets = self._partitions.get(partition)
        return offsets.epoch if offsets is not None else None

    def assigned(self, partitions: Iterable[P]) -> None:
        """Start the ownership of newly assigned partitions (else it starts at their first take)."""
        for partition in partitions:
            if partition not in self._partitions:
                self._epochs += 1
                self._partitions[partition] = PartitionOffsets(self._epochs)

    def unfenced(self) -> list[tuple[P, int]]:
        """(partition, epoch) of every ownership whose fence is not read yet."""
        return [(p, offsets.epoch) for p, offsets in self._partitions.items() if offsets.fence is None]

    def fence(self, partition: P, epoch: int, end_offset: int) -> None:
        """Set the fence of the ownership ``epoch`` (once; a later read would be just as valid)."""
        offsets = self._partitions.get(partition)
        if offsets is not None and offsets.epoch == epoch and offsets.fence is None:
            offsets.fence = end_offset

    def first_delivery(self, partition: P, offset: int, epoch: int) -> bool:
        offsets = self._partitions.get(partition)
        return offsets is not None and offsets.epoch == epoch and offsets.first_delivery(offset)

    def finish(self, partition: P, offset: int, epoch: int) -> bool:
        """Mark finished; False when the partition was revoked or lost since the message was taken."""
        offsets = self._partitions.get(partition)
        if offsets is None or offsets.epoch != epoch:
            return False
        return offsets.finish(offset)

    def to_commit(self, partitions: Iterable[P] | None = None) -> dict[P, int]:
        """Positions that moved since the last commit, of all partitions or of the given ones."""
        wanted = self._partitions.keys() if partitions is None else partitions
        positions = {}
        for partition in wanted:
            offsets = self._partitions.get(partition)
            position = offsets.to_commit() if offsets is not None else None
            if position is not None:
                positions[partition] = position
        return positions

    def committed(self, positions: dict[P, int]) -> None:
        for partition, position in positions.items():
            offsets = self._partitions.get(partition)
            if offsets is not None:
                offsets.committed(position)

    def forget(self, partitions: Iterable[P]) -> None:
        """Drop partitions this worker no longer holds; their uncommitted messages get redelivered."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def in_flight(self, partitions: Iterable[P] | None = None) -> int:
        wanted = self._partitions.keys() if partitions is None else partitions
        return sum(self._partitions[p].in_flight for p in wanted if p in self._partitions)

    def oldest_taken_at(self) -> float | None:
        """Wall time of the oldest message taken and not yet finished, over all partitions."""
        times = [t for o in self._partitions.values() if (t := o.oldest_taken_at()) is not None]
        return min(times) if times else None
