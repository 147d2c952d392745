"""``llmctl lag``: how far the consumer group is behind on the tasks topic, per partition.

The same measurement as the supervisor's probe (llm_service/consumer_lag.py): messages not yet
committed, and the age of the oldest of them in seconds. Exit 0 on an answer, 2 when the broker
could not be asked (bad config, unreachable, no such topic).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kafka.errors import KafkaError

from llm_service.clients import kafka_options
from llm_service.consumer_lag import GroupLag, measure
from llmctl.common import CONFIG_ERROR, describe, settings_from

UNREACHABLE = 2


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    lag = subparsers.add_parser(
        "lag", parents=parents, help="consumer lag per partition: messages and seconds"
    )
    lag.add_argument("--json", action="store_true", help="print one JSON object")
    lag.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for Kafka (default 20)")
    lag.set_defaults(handler=cmd_lag)


def cmd_lag(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return CONFIG_ERROR
    try:
        lag = measure(
            options=kafka_options(settings),
            group=settings.kafka_group_id,
            topic=settings.kafka_tasks_topic,
            timeout_s=args.timeout,
        )
    except (KafkaError, LookupError, OSError) as exc:
        print(f"llmctl lag: cannot measure: {describe(settings, exc)}", file=sys.stderr)
        return UNREACHABLE
    print(json.dumps(lag.as_dict()) if args.json else render(lag))
    return 0


def render(lag: GroupLag) -> str:
    total_s = "?" if lag.seconds is None else f"{lag.seconds:.1f}"
    lines = [
        f"group {lag.group} on {lag.topic}: {lag.messages} messages behind, oldest {total_s} s",
        f"{'PARTITION':<10} {'COMMITTED':>10} {'END':>10} {'LAG_MSGS':>9} {'LAG_S':>8}",
    ]
    for p in lag.partitions:
        committed = "-" if p.committed is None else str(p.committed)
        seconds = "?" if p.seconds is None else f"{p.seconds:.1f}"
        lines.append(f"{p.partition:<10} {committed:>10} {p.end:>10} {p.messages:>9} {seconds:>8}")
    return "\n".join(lines)
