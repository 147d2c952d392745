"""``python -m supervisor.lag_probe``: measure the consumer group's time lag once, print one JSON line.

Runs as its own short-lived process, started by the supervisor every SUPERVISOR_LAG_INTERVAL_S: the
supervisor itself must hold no Kafka client and no thread (it forks workers at any moment), so the
Kafka calls live here. The settings (brokers, group, topic and the Kafka security settings) come
through the environment the supervisor hands over, never through argv, so ``ps`` shows no password.
The measurement is llm_service/consumer_lag.py, shared with ``llmctl lag``.
Output: ``{"lag_s": 12.5, "lag_messages": 40, ...}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import argparse
from typing import Any

from kafka.errors import KafkaError

from llm_service.clients import kafka_options
from llm_service.config import load_settings
from llm_service.consumer_lag import measure
from llm_service.errors import ConfigError
from supervisor.probe_answer import answer


def probe(timeout_s: float) -> dict[str, Any]:
    settings = load_settings()
    lag = measure(
        options=kafka_options(settings),
        group=settings.kafka_group_id,
        topic=settings.kafka_tasks_topic,
        timeout_s=timeout_s,
    )
    return lag.as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supervisor.lag_probe")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    return answer(lambda: probe(args.timeout), (KafkaError, OSError, ValueError, LookupError, ConfigError))


if __name__ == "__main__":
    raise SystemExit(main())
