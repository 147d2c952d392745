"""Reads the fence of each newly owned partition: its end offset, before any of its messages starts.

Why the end offset proves something (llm_worker/offsets.py has the rule it feeds): a previous owner
stops starting a partition's messages before the group hands it on (a revocation waits for that; a
killed worker starts nothing), and it can only have started messages that existed. So every message
it or anyone before it started lies below the end offset read after our assignment. Read in the
consumer thread (``end_offsets`` is a blocking consumer call, not for the rebalance listener); new
partitions start paused, so their first messages normally arrive after it. Until a read succeeds
the partition's messages all count as possible redeliveries and pay the checks.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from llm_worker.inflight import InFlight

log = logging.getLogger(__name__)

FENCE_READ_TIMEOUT_MS = 2000  # the consumer thread waits this long at most; a failed read is retried


def read_fences(consumer: KafkaConsumer, inflight: InFlight[TopicPartition, Any]) -> None:
    """Set the fence of every owned partition that has none yet (one request for all of them)."""
    unfenced = inflight.unfenced()
    if not unfenced:
        return
    try:
        ends: dict[TopicPartition, int] = consumer.end_offsets(
            [partition for partition, _ in unfenced], timeout_ms=FENCE_READ_TIMEOUT_MS
        )
    except KafkaError as exc:
        log.warning("Could not read the end offsets of newly owned partitions (%s); trying again", exc)
        return
    for partition, epoch in unfenced:
        end = ends.get(partition)
        if end is not None:
            inflight.fence(partition, epoch, end)
