"""Following the status topic to the final status (COMPLETED or FAILED) of given tasks.

A group-less KafkaConsumer with manual assignment: it commits nothing and disturbs no consumer
group. Start it *before* sending a task (from the topic's end), so no status can slip past; or from a
point in time to find the status of a task sent earlier (``llmctl wait``).

Not thread-safe: one watcher per thread.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2
from kafka.structs import TopicPartition

from llm_service.clients import kafka_options
from llm_service.config import Settings
from llm_service.task_status import TaskStatus

log = logging.getLogger(__name__)

POLL_STEP_S = 0.5


@dataclass(frozen=True)
class FinalStatus:
    """The final status event of a task, as published on the status topic."""

    event: dict[str, Any]

    @property
    def task_id(self) -> str:
        return str(self.event["task_id"])

    @property
    def status(self) -> TaskStatus:
        return TaskStatus(self.event["status"])

    @property
    def ok(self) -> bool:
        return self.status is TaskStatus.COMPLETED

    @property
    def error(self) -> dict[str, str] | None:
        error = self.event.get("error")
        return error if isinstance(error, dict) else None

    @property
    def result(self) -> dict[str, str] | None:
        result = self.event.get("result")
        return result if isinstance(result, dict) else None


def partition_for(task_id: str, partitions: int) -> int:
    """The partition the producers' default partitioner picks for this key (murmur2, as in Java)."""
    return int(murmur2(task_id.encode()) & 0x7FFFFFFF) % partitions


class StatusWatcher:
    """Reads status events from a fixed starting point on; keeps the first final status per task."""

    def __init__(self, *, consumer: KafkaConsumer, topic: str) -> None:
        self._consumer = consumer
        self._topic = topic
        self._finals: dict[str, FinalStatus] = {}

    @classmethod
    def start(
        cls, settings: Settings, *, since_ms: int | None = None, task_ids: Iterable[str] | None = None
    ) -> StatusWatcher:
        """Assign the status topic (only the partitions of ``task_ids`` when given) and seek.

        ``since_ms`` None: from the current end (call before sending); else from that wall time.
        """
        consumer = KafkaConsumer(
            **kafka_options(settings),
            group_id=None,
            enable_auto_commit=False,
            client_id="llmctl-watch",
        )
        topic = settings.kafka_status_topic
        count = len(consumer.partitions_for_topic(topic))
        if count == 0:
            consumer.close()
            raise LookupError(f"status topic {topic!r} does not exist")
        wanted = range(count) if task_ids is None else sorted({partition_for(t, count) for t in task_ids})
        partitions = [TopicPartition(topic, p) for p in wanted]
        consumer.assign(partitions)
        _seek(consumer, partitions, since_ms)
        return cls(consumer=consumer, topic=topic)

    def wait(
        self,
        task_ids: Iterable[str],
        *,
        timeout: float,
        on_final: Callable[[FinalStatus], None] | None = None,
    ) -> dict[str, FinalStatus]:
        """Read until every task has a final status or ``timeout`` passes; returns those found."""
        wanted = set(task_ids)
        deadline = time.monotonic() + timeout
        reported = {t for t in wanted if t in self._finals}
        while True:
            for task_id in sorted((wanted & self._finals.keys()) - reported):
                reported.add(task_id)
                if on_final is not None:
                    on_final(self._finals[task_id])
            remaining = deadline - time.monotonic()
            if wanted <= self._finals.keys() or remaining <= 0:
                return {t: self._finals[t] for t in wanted if t in self._finals}
            self._read(min(POLL_STEP_S, remaining))

    def _read(self, seconds: float) -> None:
        batches = self._consumer.poll(timeout_ms=max(1, int(seconds * 1000)))
        for records in batches.values():
            for record in records:
                event = _decode(record.value)
                if event is None:
                    continue
                task_id = event.get("task_id")
                final = event.get("status") in (TaskStatus.COMPLETED, TaskStatus.FAILED)
                if final and isinstance(task_id, str) and task_id not in self._finals:
                    self._finals[task_id] = FinalStatus(event)

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def _seek(consumer: KafkaConsumer, partitions: list[TopicPartition], since_ms: int | None) -> None:
    ends: dict[TopicPartition, int] = consumer.end_offsets(partitions)
    starts: dict[TopicPartition, Any] = {}
    if since_ms is not None:
        starts = consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
    for partition in partitions:
        found = starts.get(partition)
        consumer.seek(partition, found.offset if found is not None else ends[partition])


def _decode(value: bytes | None) -> dict[str, Any] | None:
    try:
        event = json.loads(value or b"")
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
