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
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from llm_worker.inflight import InFlight

log = logging.getLogger(__name__)

FENCE_READ_TIMEOUT_MS = 2000  # the consumer thread waits this long at most
FENCE_RETRY_S = 5.0  # after a failed read: meanwhile the messages pay the checks, the loop runs on


class FenceReader:
    """Sets the fence of every owned partition that has none yet (one request for all of them).

    A failed read (a partition without a leader) is tried again only after FENCE_RETRY_S: each try
    blocks the consumer thread up to FENCE_READ_TIMEOUT_MS, and its commits and heartbeats with it.
    """

    def __init__(
        self,
        *,
        consumer: KafkaConsumer,
        inflight: InFlight[TopicPartition, Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._inflight = inflight
        self._clock = clock
        self._retry_at = 0.0

    def read(self) -> None:
        unfenced = self._inflight.unfenced()
        if not unfenced or self._clock() < self._retry_at:
            return
        try:
            ends: dict[TopicPartition, int] = self._consumer.end_offsets(
                [partition for partition, _ in unfenced], timeout_ms=FENCE_READ_TIMEOUT_MS
            )
        except KafkaError as exc:
            log.warning(
                "Could not read the end offsets of newly owned partitions (%s); trying again in %.0f s",
                exc,
                FENCE_RETRY_S,
            )
            self._retry_at = self._clock() + FENCE_RETRY_S
            return
        for partition, epoch in unfenced:
            end = ends.get(partition)
            if end is not None:
                self._inflight.fence(partition, epoch, end)
