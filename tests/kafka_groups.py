"""The broker's own view of a consumer group, through ``kafka-consumer-groups --describe``."""

from __future__ import annotations

from devstack.stack import Stack


def group_rows(stack: Stack, group: str, *options: str) -> list[list[str]]:
    """The output rows of ``group`` split into columns (the group name first); ``options`` picks the
    view: none for partitions and offsets, ``--members``, ``--state``."""
    command = ["--bootstrap-server", stack.kafka_bootstrap, "--describe", "--group", group, *options]
    out = stack.kafka_tool("kafka-consumer-groups", *command).stdout
    return [row for row in (line.split() for line in out.splitlines()) if row[:1] == [group]]
