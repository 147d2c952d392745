"""``python -m supervisor.instance_probe``: does a live process hold our instance prefix in the group?

Runs as its own short-lived process, started once by the supervisor before it forks any worker (the
supervisor holds no Kafka client: :mod:`supervisor.instance_claim`). It lists the group's static
members whose ``group_instance_id`` is one of ``llm-worker-<prefix>-<slot>``. A dead holder (this
host's previous run, killed or restarted) stays a member until its session timeout ends, so the
probe watches for up to ``--wait`` seconds: holders that are still there then belong to a live
process. The brokers, the group and the Kafka security settings (TLS, SASL) come through the
environment the supervisor hands over, as for :mod:`supervisor.lag_probe`: never through argv, which
``ps`` shows. Output, one JSON line: ``{"holders": [...], "seen": [...]}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from llm_service.clients import kafka_options
from llm_service.config import load_settings
from llm_service.errors import ConfigError
from llm_service.instance_id import holds_prefix
from supervisor.probe_answer import answer

RECHECK_S = 1.0


def watch(
    *, options: dict[str, Any], group: str, prefix: str, wait_s: float, timeout_s: float
) -> dict[str, Any]:
    """Holders of ``prefix`` that outlive ``wait_s`` (``holders``) and those first seen (``seen``).

    ``options``: kafka-python's connection keywords (llm_service/clients.py ``kafka_options``).
    """
    admin = KafkaAdminClient(
        **options,
        client_id="llm-supervisor-claim",
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),  # unreachable: give up soon, the supervisor starts anyway
    )
    try:
        deadline = time.monotonic() + wait_s
        seen = held = _holders(admin, group, prefix, time.monotonic() + timeout_s)
        while held and time.monotonic() < deadline:
            time.sleep(RECHECK_S)  # a separate one-shot process: nothing else waits on this
            held = _holders(admin, group, prefix, time.monotonic() + timeout_s)
        return {"holders": held, "seen": seen}
    finally:
        admin.close()


def _holders(admin: KafkaAdminClient, group: str, prefix: str, deadline: float) -> list[str]:
    """The group's members holding ``prefix``; retries while the coordinator is being elected."""
    while True:
        try:
            described = admin.describe_groups([group]).get(group) or {}
            break
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    ids = (member.get("group_instance_id") for member in described.get("members") or [])
    return sorted(i for i in ids if isinstance(i, str) and holds_prefix(i, prefix))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supervisor.instance_probe")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--wait", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)

    def probe() -> dict[str, Any]:
        settings = load_settings()
        return watch(
            options=kafka_options(settings),
            group=settings.kafka_group_id,
            prefix=args.prefix,
            wait_s=args.wait,
            timeout_s=args.timeout,
        )

    return answer(probe, (KafkaError, OSError, ValueError, LookupError, ConfigError))


if __name__ == "__main__":
    raise SystemExit(main())
