"""The rebalance listener: hands partitions back cleanly when the group takes them away.

kafka-python 3.0 calls listeners on its IO event loop thread (not asyncio), the loop that also
sends heartbeats. A blocking listener would stop heartbeats, so this one is an
AsyncConsumerRebalanceListener and pauses with the loop's own sleep. It runs while the consumer
thread is blocked inside ``poll`` or the join wait of llm_worker/join_guard.py (a rebalance completes
there) or inside ``close``, so it may call the consumer (pause) without racing that thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import TopicPartition

log = logging.getLogger(__name__)


class PartitionOwner(Protocol):
    """The consumer loop's side of a rebalance (llm_worker.consumer_loop.ConsumerLoop)."""

    async def partitions_revoked(self, partitions: list[TopicPartition]) -> None: ...
    def partitions_lost(self, partitions: list[TopicPartition]) -> None: ...
    def partitions_assigned(self, partitions: list[TopicPartition]) -> None: ...


def loop_sleep(consumer: KafkaConsumer, seconds: float) -> Awaitable[Any]:
    """An awaitable pause on kafka-python's IO loop that lets heartbeats go on meanwhile.

    The IO loop is kafka-python's own scheduler, not asyncio, so asyncio.sleep does not work there.
    ``_net.sleep`` is private API: kafka-python is pinned to >=3.0.12,<3.1 in setup.cfg for it.
    """
    return consumer._net.sleep(seconds)  # type: ignore[no-any-return]


class RebalanceListener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Forwards the group's decisions to the consumer loop; logs each one for the operator."""

    def __init__(self, *, owner: PartitionOwner) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        partitions = sorted(revoked)
        if partitions:
            await self._owner.partitions_revoked(partitions)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        partitions = sorted(assigned)
        if partitions:
            log.info("Partitions assigned: %s", _names(partitions))
            self._owner.partitions_assigned(partitions)

    async def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        partitions = sorted(lost)
        if partitions:
            log.warning(
                "Partitions lost (this worker left the group): %s; dropping their uncommitted work",
                _names(partitions),
            )
            self._owner.partitions_lost(partitions)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions)
