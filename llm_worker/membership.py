"""Leaving the consumer group for good, for a static member.

A consumer with a ``group.instance.id`` never sends LeaveGroup on close: the broker keeps its
partitions for the session timeout so that a restart of the same slot takes them back without a
rebalance. When the slot is retired instead (the pool shrank), that wait only idles the partitions,
so the worker removes its own instance id through the admin API (KIP-345) after closing its consumer.

Runs in the worker process, on the way out, after the consumer is closed.
"""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, MemberToRemove
from kafka.errors import KafkaError

from llm_service.clients import kafka_options
from llm_service.config import Settings

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_MS = 5000


def leave_group(settings: Settings, group_instance_id: str) -> None:
    """Remove this static member from the group; a failure only means the session timeout applies."""
    try:
        admin = KafkaAdminClient(
            **kafka_options(settings),
            client_id=f"{group_instance_id}-leave",
            request_timeout_ms=ADMIN_TIMEOUT_MS,
        )
    except KafkaError as exc:
        log.warning("Could not leave group %s as %s: %s", settings.kafka_group_id, group_instance_id, exc)
        return
    try:
        member = MemberToRemove(group_instance_id=group_instance_id, reason="worker slot retired")
        result = admin.remove_group_members(settings.kafka_group_id, [member])
        errors = [error for error in result.values() if error.__name__ != "NoError"]
        if errors:
            log.warning("Leaving group %s as %s: %s", settings.kafka_group_id, group_instance_id, errors)
        else:
            log.info("Left group %s as %s (slot retired)", settings.kafka_group_id, group_instance_id)
    except KafkaError as exc:
        log.warning("Could not leave group %s as %s: %s", settings.kafka_group_id, group_instance_id, exc)
    finally:
        admin.close()
