"""The consumer group's lag on the tasks topic, per partition: messages behind and age in seconds.

Shared by the supervisor's periodic probe (supervisor/lag_probe.py, its own short-lived process) and
``llmctl lag``; both are one-shot callers, so plain blocking calls with a deadline are fine here.

For each partition: ``messages`` = end offset - committed offset (the log start when nothing is
committed); ``seconds`` = the age of the oldest message not yet committed, read from that message's
timestamp (0 when nothing is behind; None when it could not be read before the deadline).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

CLIENT_ID = "llm-lag"


@dataclass(frozen=True, kw_only=True)
class PartitionLag:
    partition: int
    committed: int | None
    end: int
    messages: int
    seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        seconds = None if self.seconds is None else round(self.seconds, 1)
        return {
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag_messages": self.messages,
            "lag_s": seconds,
        }


@dataclass(frozen=True, kw_only=True)
class GroupLag:
    group: str
    topic: str
    partitions: tuple[PartitionLag, ...]

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)

    @property
    def seconds(self) -> float | None:
        """The oldest unprocessed message's age over all partitions (None: behind, age unknown)."""
        ages = [p.seconds for p in self.partitions if p.messages]
        if not ages:
            return 0.0
        known = [a for a in ages if a is not None]
        return max(known) if known else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "lag_s": self.seconds,
            "lag_messages": self.messages,
            "partitions": [p.as_dict() for p in self.partitions],
        }


def measure(*, options: dict[str, Any], group: str, topic: str, timeout_s: float) -> GroupLag:
    """Ask the broker once; ``options`` are the clients' kafka_options (llm_service/clients.py)."""
    deadline = time.monotonic() + timeout_s
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(**options, client_id=CLIENT_ID, request_timeout_ms=timeout_ms)
    try:
        committed = _committed(admin, group, deadline)
    finally:
        admin.close()
    consumer = KafkaConsumer(
        **options, group_id=None, enable_auto_commit=False, client_id=CLIENT_ID, request_timeout_ms=timeout_ms
    )
    try:
        return GroupLag(
            group=group, topic=topic, partitions=_per_partition(consumer, topic, committed, deadline)
        )
    finally:
        consumer.close()


def _committed(admin: KafkaAdminClient, group: str, deadline: float) -> dict[TopicPartition, int]:
    """The group's committed offsets; retries while the coordinator is being elected (a fresh cluster)."""
    while True:
        try:
            offsets = admin.list_group_offsets({group: None}).get(group, {})
            return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # a one-shot caller: nothing else waits on this


def _per_partition(
    consumer: KafkaConsumer, topic: str, committed: dict[TopicPartition, int], deadline: float
) -> tuple[PartitionLag, ...]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise LookupError(f"topic {topic!r} does not exist")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    start = {tp: max(committed.get(tp, -1), begin[tp]) for tp in tps}
    pending = {tp: start[tp] for tp in tps if start[tp] < end[tp]}
    oldest_ms = _first_timestamps(consumer, pending, deadline) if pending else {}
    now = time.time()
    return tuple(
        PartitionLag(
            partition=tp.partition,
            committed=committed.get(tp),
            end=end[tp],
            messages=end[tp] - start[tp],
            seconds=_age(tp, pending, oldest_ms, now),
        )
        for tp in tps
    )


def _age(
    tp: TopicPartition, pending: dict[TopicPartition, int], oldest_ms: dict[TopicPartition, int], now: float
) -> float | None:
    if tp not in pending:
        return 0.0
    found = oldest_ms.get(tp)
    return None if found is None else max(0.0, now - found / 1000)


def _first_timestamps(
    consumer: KafkaConsumer, pending: dict[TopicPartition, int], deadline: float
) -> dict[TopicPartition, int]:
    """The timestamp of the first unprocessed message of each pending partition."""
    consumer.assign(list(pending))
    for tp, offset in pending.items():
        consumer.seek(tp, offset)
    waiting, found = set(pending), {}
    while waiting and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            if tp in waiting and records:
                found[tp] = records[0].timestamp
                waiting.discard(tp)
                consumer.pause(tp)
    return found
