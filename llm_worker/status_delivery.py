"""Getting a task's statuses and dead letters to Kafka: queued, or sent and acknowledged.

A final status and a dead letter are awaited (the offset is committed only after their ack) and
sent again after a failure until acknowledged or the worker stops. One that the broker refuses for
its size is sent once more cut down (no echoed metadata, a truncated dead letter), never retried
forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError, MessageSizeTooLargeError

from llm_service import log_lines
from llm_service.errors import TaskError
from llm_service.task_status import TaskStatus
from llm_worker.events import DLQ_FALLBACK_BYTES, Delivery, Source, status_event
from llm_worker.ports import Publisher
from llm_worker.task_context import Record, TaskContext
from llm_worker.task_run import TaskRun

log = logging.getLogger(__name__)

PUBLISH_WAIT_S = 5.0  # one wait for a broker ack before checking for a stop request
PUBLISH_RETRY_S = 2.0


class StatusDelivery:
    """Sends one worker's status events and dead letters through its publisher."""

    def __init__(self, *, publisher: Publisher, wall_clock: Callable[[], float]) -> None:
        self._publisher = publisher
        self._wall_clock = wall_clock

    @property
    def worker_id(self) -> str:
        return self._publisher.worker_id

    def event(
        self,
        *,
        task_id: str,
        status: TaskStatus,
        attempt: int,
        metadata: dict[str, Any] | None,
        **fields: Any,
    ) -> dict[str, Any]:
        return status_event(
            task_id=task_id,
            status=status,
            worker_id=self._publisher.worker_id,
            attempt=attempt,
            metadata=metadata,
            now=self._wall_clock(),
            **fields,
        )

    def for_run(self, run: TaskRun, status: TaskStatus, *, attempt: int = 0, **fields: Any) -> dict[str, Any]:
        """A status event of a task run: its attempt so far (at least 1) unless ``attempt`` is given."""
        return self.event(
            task_id=run.spec.task_id,
            status=status,
            attempt=attempt or max(run.attempt, 1),
            metadata=run.spec.metadata,
            **fields,
        )

    def queue(self, event: dict[str, Any]) -> None:
        """A non-final status, not awaited (the final one's ack covers it: same key, idempotent)."""
        try:
            self._publisher.status(event)
        except KafkaError as exc:
            log.warning("Could not queue status %d of task %s: %s", event["status"], event["task_id"], exc)

    def final(self, event: dict[str, Any], ctx: TaskContext) -> None:
        """A final status, acknowledged; cut down (no metadata echo) when the broker refuses its size."""
        try:
            self._deliver(lambda: self._publisher.status(event), ctx, give_up_on=MessageSizeTooLargeError)
        except MessageSizeTooLargeError:
            self._deliver(lambda: self._publisher.status(event, cut=True), ctx)

    def failed(
        self,
        record: Record,
        error: TaskError,
        ctx: TaskContext,
        *,
        task_id: str | None,
        metadata: dict[str, Any] | None,
        attempt: int = 1,
    ) -> None:
        """FAILED status (when the task id is known) and the dead letter, both acknowledged."""
        log.warning(log_lines.TASK_FAILED, task_id or f"<{record.where()}>", f"{error.code}: {error}")
        if task_id is not None:
            event = self.event(
                task_id=task_id, status=TaskStatus.FAILED, attempt=attempt, metadata=metadata, error=error
            )
            self.final(event, ctx)
        source = Source(record.topic, record.partition, record.offset)

        def dead_letter(limit: int | None = None) -> Delivery:
            return self._publisher.dead_letter(
                raw=record.value, key=record.key, task_id=task_id, error=error, source=source, limit=limit
            )

        try:
            self._deliver(dead_letter, ctx, give_up_on=MessageSizeTooLargeError)
        except MessageSizeTooLargeError:
            log.warning("The DLQ refused the full message of task %s; sending it truncated", task_id)
            self._deliver(lambda: dead_letter(DLQ_FALLBACK_BYTES), ctx)

    def _deliver(
        self, send: Callable[[], Delivery], ctx: TaskContext, give_up_on: type[KafkaError] | None = None
    ) -> None:
        """Send and wait for the broker's ack; re-send after a failure until acked or stopping.

        Once the final status (or dead letter) is queued, a task that still holds its place (a failed
        one: a completed one gave it back when the model answered) gives it back: what is left is the
        acknowledgement and the final-status marker (llm_worker/places.py).
        """
        while True:
            try:
                delivery = send()
                ctx.release_place()
                _await(delivery, ctx)
                return
            except KafkaError as exc:
                if give_up_on is not None and isinstance(exc, give_up_on):
                    raise
                log.warning(
                    "Kafka did not acknowledge an event (%s); sending it again in %.0fs", exc, PUBLISH_RETRY_S
                )
                ctx.sleep(PUBLISH_RETRY_S, owned=False)


def _await(delivery: Delivery, ctx: TaskContext) -> None:
    while True:
        try:
            delivery.get(timeout=PUBLISH_WAIT_S)
            return
        except KafkaError:
            if getattr(delivery, "is_done", True):
                raise  # the send failed for good (delivery timeout, size, authorization)
        ctx.check(owned=False)
