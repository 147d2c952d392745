"""kafka-python 3.0.12 stops fetching a partition paused while its records wait in line (fetch_guard.py).

Against the real broker: a consumer holding two partitions pauses the one whose batch is in line,
drains the other, resumes the first, and must get the rest of its messages. Without the guard the
library never fetches it again (the first case proves the bug is still there; when a kafka-python
release fixes it, that case fails and the guard can go).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devstack.stack import Stack
from llm_worker.fetch_guard import clear_drained_records
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

PER_PARTITION = 30


@pytest.fixture
def topic(stack: Stack, unique_name: str) -> str:
    name = f"{unique_name}-fetch"
    stack.create_topic(name, 2)
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    try:
        for partition in (0, 1):
            for i in range(PER_PARTITION):
                producer.send(name, value=f"{partition}-{i}".encode(), partition=partition)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    return name


@pytest.fixture
def consumer(stack: Stack) -> Iterator[KafkaConsumer]:
    client = KafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, max_poll_records=1
    )
    yield client
    client.close()


def _poll(consumer: KafkaConsumer, guard: bool) -> dict[TopicPartition, int]:
    if guard:
        clear_drained_records(consumer)
    got = consumer.poll(timeout_ms=200)
    return {tp: len(records) for tp, records in got.items()}


def _pause_in_line_then_resume(consumer: KafkaConsumer, topic: str, *, guard: bool) -> int:
    """Messages of the paused-then-resumed partition received within 10 s of resuming it."""
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    first = wait_until(lambda: _poll(consumer, guard), timeout=30, what="a first record")
    in_line = next(iter(first))  # its batch has PER_PARTITION - 1 more records waiting in line
    other = next(tp for tp in tps if tp != in_line)
    consumer.pause(in_line)
    seen = {in_line: first[in_line], other: 0}

    def other_drained() -> bool:
        for tp, n in _poll(consumer, guard).items():
            seen[tp] += n
        return seen[other] >= PER_PARTITION

    wait_until(other_drained, timeout=30, what="the other partition consumed")
    consumer.resume(in_line)

    def resumed_done() -> bool:
        for tp, n in _poll(consumer, guard).items():
            seen[tp] += n
        return seen[in_line] >= PER_PARTITION

    with contextlib.suppress(AssertionError):  # the bug: it never comes; the caller judges the count
        wait_until(resumed_done, timeout=30, what="the resumed partition consumed")
    return seen[in_line]


def test_without_the_guard_a_partition_paused_in_line_is_never_fetched_again(
    consumer: KafkaConsumer, topic: str
) -> None:
    assert _pause_in_line_then_resume(consumer, topic, guard=False) < PER_PARTITION


def test_with_the_guard_the_resumed_partition_is_consumed_to_the_end(
    consumer: KafkaConsumer, topic: str
) -> None:
    assert _pause_in_line_then_resume(consumer, topic, guard=True) == PER_PARTITION
