"""Malformed task messages mixed into good traffic, on the real stack under ``llm-supervisor``.

Issue 7: a handful of malformed messages put both workers of a fresh group into FATAL and left the
good tasks behind them waiting. Here a few hundred of them (tests/worker/bad_messages.py) are
interleaved with good tasks on four partitions: every good task must complete, every bad one must end
in exactly one FAILED status (where it names a task) and exactly one dead letter, no worker may
restart, and the log must hold nothing at WARNING or above but the one line per bad message.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest
from kafka import KafkaProducer

from devstack.stack import Stack
from tests.supervisor.conftest import StartSupervisor
from tests.supervisor.harness import Supervisor
from tests.waiting import wait_until
from tests.worker.bad_messages import BadMessage, corpus
from tests.worker.harness import Names, StatusLog, TopicReader, task_bytes

pytestmark = pytest.mark.stack

BAD = 300
GOOD = 60
# Small enough that the long-echo messages (a ~200 KB message, a ~760 KB echo) need cutting down.
MAX_REQUEST_BYTES = 600_000
# Every record of the text format starts with its version and logger fields.
LOG_RECORD = re.compile(r"^\S+ - [\w.]+ - \w+ - \S+ - ")
EXPECTED_WARNINGS = ("Failed to process task ", "cut down to fit")
# This test is about messages, not the host: a shared test machine at 100 % CPU must neither pause
# the pool (load shedding) nor raise the cpu_high alert here.
HOST_LOAD_IGNORED = {"LIMIT_CPU_PERCENT": "100", "ALERT_CPU_PERCENT": "100", "LIMIT_RAM_PERCENT": "100"}
# Notices about the broker and the group, not messages, seen with good traffic only too: kafka-python's
# own (its IO thread late for the GIL, a fresh group's coordinator moving) and join_guard's rejoin
# after a rebalance kafka-python finished late (llm_worker/join_guard.py), both from a loaded machine.
NOT_ABOUT_MESSAGES = re.compile(r"^\S+ - (kafka\.[\w.]+|llm_worker\.join_guard) - ")


def _mixed(bad: list[BadMessage]) -> list[tuple[str | BadMessage, bytes | None]]:
    """Good tasks spread evenly through the bad ones: (good task id | bad message, value)."""
    out: list[tuple[str | BadMessage, bytes | None]] = []
    every = max(1, len(bad) // GOOD)
    for i, message in enumerate(bad):
        if i % every == 0:
            task_id = f"good-{i}"
            out.append((task_id, task_bytes(task_id, prompt=f"say {i}", metadata={"n": i})))
        out.append((message, message.value))
    return out


def _send_all(
    producer: KafkaProducer, topic: str, mixed: list[tuple[str | BadMessage, bytes | None]]
) -> dict[tuple[int, int], BadMessage]:
    """Send everything (keyless, so round-robin over partitions); the bad ones by (partition, offset)."""
    futures = [
        (what, producer.send(topic, value=value, key=b"k" if value is None else None))
        for what, value in mixed
    ]
    bad: dict[tuple[int, int], BadMessage] = {}
    for what, future in futures:
        meta = future.get(timeout=60)
        if isinstance(what, BadMessage):
            bad[(meta.partition, meta.offset)] = what
    return bad


def _restarts(sup: Supervisor) -> list[int]:
    done = sup.llmctl("status", "--json")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    return [w["restarts"] for w in json.loads(out)["workers"]]


def test_bad_messages_mixed_with_good_traffic_end_once_and_no_worker_restarts(
    start_real: StartSupervisor, stack: Stack, names: Names, status_log: StatusLog
) -> None:
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=20, max_request_size=2 << 20)
    dlq = TopicReader(stack.kafka_bootstrap, names.dlq)
    try:
        sup = start_real(
            KAFKA_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES),
            WORKER_MAX_CONCURRENT_TASKS="8",
            **HOST_LOAD_IGNORED,
        )
        sup.running(2, timeout=60)
        mixed = _mixed(corpus(BAD))
        bad = _send_all(producer, names.tasks, mixed)
        good = [what for what, _ in mixed if isinstance(what, str)]
        named = [m.task_id for m in bad.values() if m.task_id is not None]
        finals = status_log.wait_finals([*good, *named], timeout=120)
        wait_until(lambda: len(dlq.read()) >= len(bad), timeout=60, what=f"{len(bad)} dead letters")
        _check_finals(finals, good, named)
        _check_dead_letters(dlq.records, bad, names)
        assert _restarts(sup) == [0, 0]
        _check_log(sup.log_text(), bad_count=len(bad))
    finally:
        dlq.close()
        producer.close(timeout=10)


def _check_finals(finals: dict[str, list[dict[str, Any]]], good: list[str], named: list[str]) -> None:
    not_completed = {
        t: [e["status"] for e in finals[t]] for t in good if [e["status"] for e in finals[t]] != [3]
    }
    assert not not_completed, f"good tasks not COMPLETED exactly once: {list(not_completed.items())[:5]}"
    wrong = {t: finals[t] for t in named if [e["status"] for e in finals[t]] != [4]}
    assert not wrong, f"bad tasks without exactly one FAILED: {list(wrong.items())[:3]}"
    assert all(finals[t][0]["error"]["code"] and finals[t][0]["error"]["message"] for t in named)
    echoes = [finals[t][0] for t in named if t.startswith("echo-")]
    assert echoes and all(e["metadata"] is None for e in echoes), "a too-large echo was not cut down"


def _check_dead_letters(records: list[Any], bad: dict[tuple[int, int], BadMessage], names: Names) -> None:
    sources = Counter(
        (int(dict(r.headers)["source_partition"]), int(dict(r.headers)["source_offset"])) for r in records
    )
    assert sum(sources.values()) == len(bad) and set(sources) == set(bad), (
        "not one dead letter per bad message"
    )
    for record in records:
        head = dict(record.headers)
        message = bad[(int(head["source_partition"]), int(head["source_offset"]))]
        assert head["source_topic"].decode() == names.tasks and head["error_code"]
        assert record.value == (message.value or b""), message.family


def _check_log(text: str, *, bad_count: int) -> None:
    lines = text.splitlines()
    strays = [line for line in lines if line and not LOG_RECORD.match(line)]
    assert not strays, f"log lines that are not records (a raw newline or a traceback): {strays[:5]}"
    loud = [
        line for line in lines if " - WARNING - " in line or " - ERROR - " in line or " - CRITICAL - " in line
    ]
    loud = [line for line in loud if not NOT_ABOUT_MESSAGES.match(line)]
    unexpected = [line for line in loud if not any(text in line for text in EXPECTED_WARNINGS)]
    assert not unexpected, f"unexpected warnings: {unexpected[:5]}"
    failed_lines = [line for line in loud if "Failed to process task " in line]
    assert len(failed_lines) == bad_count
