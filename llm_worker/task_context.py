"""What the consumer loop and the pipeline share about one Kafka message: the record, whether its task
may go on, and how its run ended."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from llm_service.errors import ShutdownRequested


class Outcome(enum.Enum):
    DONE = "done"  # final status acknowledged: the offset may be committed
    HANDED_BACK = "handed_back"  # stopped or partition revoked before the end: do not commit


@dataclass(frozen=True)
class Record:
    """The part of a Kafka record the pipeline needs (a ConsumerRecord in production)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def where(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


class TaskPlace(Protocol):
    """A task's claim on a place (a ticket of llm_worker/places.py, as the consumer loop hands it over)."""

    @property
    def placed(self) -> bool: ...
    def take(self, ctx: TaskContext) -> None: ...
    def release(self) -> bool: ...
    def under_way(self) -> None: ...
    def give_way(self) -> None: ...


class AlwaysPlaced:
    """No places counted (tests that run the pipeline alone): always placed, nothing to wait for."""

    placed = True

    def take(self, ctx: TaskContext) -> None:
        return None

    def release(self) -> bool:
        return False

    def under_way(self) -> None:
        return None

    def give_way(self) -> None:
        return None


class TaskContext:
    """Per task: may it go on? False once its partition was revoked or lost, or the worker stops now."""

    def __init__(
        self,
        *,
        still_owned: Callable[[], bool],
        stopping: threading.Event,
        draining: threading.Event | None = None,
        revoking: Callable[[], bool] = lambda: False,
        place: TaskPlace | None = None,
    ) -> None:
        self._still_owned = still_owned
        self._stopping = stopping
        self._draining = draining or threading.Event()
        self._revoking = revoking
        self._place: TaskPlace = place or AlwaysPlaced()

    @property
    def has_place(self) -> bool:
        return self._place.placed

    def take_place(self) -> None:
        """Before the task's model work (its input read on): wait for a place if it prepared ahead of
        one (llm_worker/places.py). Raises ShutdownRequested when the task must be handed back."""
        self._place.take(self)

    def release_place(self) -> None:
        """The model has answered (or the task's FAILED status is queued): the next task may take its
        place while this thread writes and publishes (llm_worker/places.py). The ticket gives a place
        back once; later calls do nothing."""
        self._place.release()

    def under_way(self) -> None:
        """The task's model requests go out now: background work no longer gives way to this task."""
        self._place.under_way()

    def give_way(self) -> None:
        """Before work that holds no model call back: let the tasks on their way to one go first."""
        self._place.give_way()

    @property
    def revoking(self) -> bool:
        """The task's partition is being given up: a task merely waiting for a place hands itself back."""
        return self._revoking()

    @property
    def draining(self) -> bool:
        """The worker takes no new tasks: a task merely waiting for its budget hands itself back."""
        return self._draining.is_set()

    def check(self, *, owned: bool = True) -> None:
        """Raise ShutdownRequested when the task must be handed back instead of finished.

        ``owned=False`` ignores a revoked partition: used once the outcome is decided and only its
        publication remains, which is worth finishing for whoever takes the partition over.
        """
        if self._stopping.is_set() or (owned and not self._still_owned()):
            raise ShutdownRequested("task handed back")

    def sleep(self, seconds: float, *, owned: bool = True) -> None:
        self._place.under_way()  # a task that waits is not on its way: nobody gives way to it
        if self._stopping.wait(max(0.0, seconds)):
            raise ShutdownRequested("task handed back")
        self.check(owned=owned)
