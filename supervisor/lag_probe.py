"""``python -m supervisor.lag_probe``: measure the consumer group's time lag once, print one JSON line.

Runs as its own short-lived process, started by the supervisor every SUPERVISOR_LAG_INTERVAL_S: the
supervisor itself must hold no Kafka client and no thread (it forks workers at any moment), so the
Kafka calls live here. The time lag is the age of the oldest message not yet committed by the group:
for each partition with committed < end, read the message at the committed offset and take its
timestamp. Output: ``{"lag_s": 12.5, "lag_messages": 40}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError


def measure(*, bootstrap: str, group: str, topic: str, timeout_s: float) -> dict[str, Any]:
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="llm-supervisor-lag", request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        committed = _committed(admin, group, time.monotonic() + timeout_s)
    finally:
        admin.close()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id="llm-supervisor-lag",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        return _time_lag(consumer, topic, committed, timeout_s)
    finally:
        consumer.close()


def _committed(admin: KafkaAdminClient, group: str, deadline: float) -> dict[TopicPartition, int]:
    """The group's committed offsets; retries while the coordinator is being elected (a fresh cluster)."""
    while True:
        try:
            offsets = admin.list_group_offsets({group: None}).get(group, {})
            return {tp: meta.offset for tp, meta in offsets.items()}
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # a separate one-shot process: nothing else waits on this


def _time_lag(
    consumer: KafkaConsumer, topic: str, committed: dict[TopicPartition, int], timeout_s: float
) -> dict[str, Any]:
    partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    start = {tp: max(committed.get(tp, -1), begin[tp]) for tp in tps}
    pending = {tp: start[tp] for tp in tps if start[tp] < end[tp]}
    if not pending:
        return {"lag_s": 0.0, "lag_messages": 0}
    consumer.assign(list(pending))
    for tp, offset in pending.items():
        consumer.seek(tp, offset)
    oldest_ms = _first_timestamps(consumer, set(pending), time.monotonic() + timeout_s)
    lag_s = max(0.0, time.time() - min(oldest_ms) / 1000) if oldest_ms else None
    return {"lag_s": lag_s, "lag_messages": sum(end[tp] - off for tp, off in pending.items())}


def _first_timestamps(consumer: KafkaConsumer, waiting: set[TopicPartition], deadline: float) -> list[int]:
    found: list[int] = []
    while waiting and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            if tp in waiting and records:
                found.append(records[0].timestamp)
                waiting.discard(tp)
                consumer.pause(tp)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supervisor.lag_probe")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        result = measure(bootstrap=args.bootstrap, group=args.group, topic=args.topic, timeout_s=args.timeout)
    except (KafkaError, OSError, ValueError) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # the process boundary: the supervisor gets one line, never a traceback
        result = {"error": f"unexpected {type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
