"""The Kafka static-membership identity of a worker slot: ``llm-worker-<prefix>-<slot>``.

Shared by the supervisor (each slot's ``group_instance_id``, the start-up check that no live
supervisor already holds the prefix) and a lone ``llm-worker --slot``. The prefix is
WORKER_INSTANCE_PREFIX, or the host name when it is empty; it must be unique per supervisor in one
consumer group, or the broker fences one process with each join of the other (docs/scaling.md).
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")  # what Kafka accepts in a group.instance.id
MAX_LENGTH = 249


def instance_prefix(configured: str, hostname: str) -> str:
    """WORKER_INSTANCE_PREFIX, or the host name with characters Kafka rejects replaced."""
    return configured or _UNSAFE.sub("-", hostname)


def group_instance_id(prefix: str, slot: int) -> str:
    return _UNSAFE.sub("-", f"{stem(prefix)}{slot}")[:MAX_LENGTH]


def stem(prefix: str) -> str:
    """The part every slot id of ``prefix`` starts with."""
    return f"llm-worker-{prefix}-"


def holds_prefix(instance_id: str, prefix: str) -> bool:
    """True when ``instance_id`` is a slot of ``prefix`` (not of a longer prefix such as ``<prefix>-b``)."""
    head = stem(_UNSAFE.sub("-", prefix))
    return instance_id.startswith(head) and instance_id[len(head) :].isdigit()
