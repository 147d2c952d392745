"""The runbook's Kafka commands (``kafka-topics``, ``kafka-consumer-groups``) from the cached jars.

Installed as console scripts of the same names, so the runbook's lines run as written, e.g.
``kafka-consumer-groups --bootstrap-server localhost:9092 --describe --group llm-worker-group``.
Each is a thin ``exec`` of java with the class the release's shell script would run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from devstack.paths import cache_dir, kafka_home
from devstack.provision import kafka_libs, require_tool
from llm_service.errors import StackError

TOOL_CLASSES = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
}


def tool_command(tool: str, args: list[str], *, cache: Path) -> list[str]:
    if tool not in TOOL_CLASSES:
        raise StackError(f"unknown Kafka tool {tool!r}; known: {', '.join(TOOL_CLASSES)}")
    libs = kafka_libs(cache)
    # Tiered compilation level 1: these JVMs live for a second, so a faster start beats a faster peak.
    return [
        require_tool("java"),
        "-Xmx256m",
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        f"-Dlog4j2.configurationFile={kafka_home(cache) / 'tools-log4j2.properties'}",
        "-cp",
        f"{libs}/*",
        TOOL_CLASSES[tool],
        *args,
    ]


def _exec(tool: str) -> int:
    try:
        argv = tool_command(tool, sys.argv[1:], cache=cache_dir())
    except StackError as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
        return 2
    os.execv(argv[0], argv)


def kafka_topics() -> int:
    return _exec("kafka-topics")


def kafka_consumer_groups() -> int:
    return _exec("kafka-consumer-groups")
