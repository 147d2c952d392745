"""Reading a window of the status topic: every status event from a point in time up to the end as of now.

Used by ``llmctl stats`` and ``llmctl audit``. A group-less consumer with manual assignment: it
commits nothing and disturbs no consumer group. The end offsets are taken once at the start, so a
busy topic does not keep the read going; a deadline bounds it on a slow broker, and the result says
whether the whole window was read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from llm_service.clients import kafka_options
from llm_service.config import Settings

POLL_MS = 500


@dataclass
class History:
    """The status events read, in topic order per partition; ``complete`` is False after a deadline."""

    topic: str
    since_ms: int | None
    events: list[dict[str, Any]] = field(default_factory=list)
    unreadable: int = 0
    complete: bool = True


def read_status_history(settings: Settings, *, since_ms: int | None, timeout_s: float) -> History:
    """Events of KAFKA_STATUS_TOPIC written at or after ``since_ms`` (None: the whole topic)."""
    topic = settings.kafka_status_topic
    consumer = KafkaConsumer(
        **kafka_options(settings), group_id=None, enable_auto_commit=False, client_id="llmctl-history"
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"status topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends: dict[TopicPartition, int] = consumer.end_offsets(tps)
        consumer.assign(tps)
        _seek(consumer, tps, since_ms, ends)
        history = History(topic=topic, since_ms=since_ms)
        _read(consumer, history, ends, time.monotonic() + timeout_s)
        return history
    finally:
        consumer.close(autocommit=False)


def _seek(
    consumer: KafkaConsumer, tps: list[TopicPartition], since_ms: int | None, ends: dict[TopicPartition, int]
) -> None:
    if since_ms is None:
        consumer.seek_to_beginning(*tps)
        return
    found = consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    for tp in tps:
        at = found.get(tp)
        consumer.seek(tp, at.offset if at is not None else ends[tp])


def _read(
    consumer: KafkaConsumer, history: History, ends: dict[TopicPartition, int], deadline: float
) -> None:
    waiting = {tp for tp, end in ends.items() if consumer.position(tp) < end}
    while waiting:
        if time.monotonic() > deadline:
            history.complete = False
            return
        for tp, records in consumer.poll(timeout_ms=POLL_MS).items():
            for record in records:
                if record.offset < ends[tp]:
                    _keep(history, record.value)
        waiting = {tp for tp in waiting if consumer.position(tp) < ends[tp]}


def _keep(history: History, value: bytes | None) -> None:
    try:
        event = json.loads(value or b"")
    except ValueError:
        event = None
    if isinstance(event, dict) and isinstance(event.get("task_id"), str):
        history.events.append(event)
    else:
        history.unreadable += 1
