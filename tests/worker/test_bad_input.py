"""Bad messages and bad inputs on the real stack: each ends in FAILED (when it names a task) plus a dead
letter with the precise error code, and the partition moves on to the good task behind it."""

from __future__ import annotations

import io
import json

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from minio import Minio

from devstack.stack import Stack
from tests.waiting import wait_until
from tests.worker.conftest import Testbed
from tests.worker.harness import Names, send, task_bytes

pytestmark = pytest.mark.stack

INPUT_LIMIT = 4096


def _bad_messages(prefix: str) -> list[tuple[str, str | None, bytes]]:
    """(expected error code, task id named in the status or None, message bytes)."""
    big = task_bytes("big-1", prompt="x" * (1024 * 1024))
    return [
        ("INVALID_JSON", None, b"this is {not json"),
        ("INVALID_TASK", None, json.dumps({"prompt": "no task id"}).encode()),
        ("INVALID_TASK_ID", "bad id!", task_bytes("bad id!", prompt="x")),
        ("INVALID_TASK", "no-prompt-1", task_bytes("no-prompt-1")),
        (
            "INPUT_NOT_FOUND",
            "missing-1",
            task_bytes("missing-1", prompt="x", input={"bucket": "llm-input", "key": f"{prefix}nope.txt"}),
        ),
        (
            "INPUT_TOO_LARGE",
            "large-1",
            task_bytes("large-1", prompt="x", input={"bucket": "llm-input", "key": f"{prefix}large.txt"}),
        ),
        (
            "INPUT_NOT_TEXT",
            "garbage-1",
            task_bytes("garbage-1", prompt="x", input={"bucket": "llm-input", "key": f"{prefix}garbage.txt"}),
        ),
        (
            "BUCKET_NOT_ALLOWED",
            "bucket-1",
            task_bytes("bucket-1", prompt="x", input={"bucket": "llm-output", "key": "results/x.json"}),
        ),
        ("MESSAGE_TOO_LARGE", "big-1", big),
    ]


def _upload(s3: Minio, key: str, data: bytes) -> None:
    s3.put_object("llm-input", key, io.BytesIO(data), len(data))


def test_bad_messages_fail_precisely_and_the_partition_moves_on(bed: Testbed) -> None:
    names = bed.create(partitions=1)  # one partition: every good task queues behind the bad ones
    s3, producer = bed.s3, bed.producer
    _upload(s3, f"{names.prefix}large.txt", b"a" * (INPUT_LIMIT + 1))
    _upload(s3, f"{names.prefix}garbage.txt", bytes(range(256)) * 16)
    cases = _bad_messages(names.prefix)
    good = []
    for i, (_, _, value) in enumerate(cases):
        send(producer, names.tasks, value)
        good.append(f"good-{i}")
        send(producer, names.tasks, task_bytes(good[-1], prompt="fine"))
    bed.start_worker(bed.env(INPUT_MAX_BYTES=str(INPUT_LIMIT))).started()
    status_log, dlq = bed.status_log(), bed.dlq_log()
    named = [task_id for _, task_id, _ in cases if task_id is not None]
    finals = status_log.wait_finals([*named, *good], timeout=90)
    wait_until(lambda: len(dlq.read()) >= len(cases), timeout=60, what="a dead letter per bad message")
    _check_statuses(cases, finals, good)
    _check_dead_letters(cases, dlq.records, names)
    _check_committed_to_end(bed.stack, names)


def _check_statuses(
    cases: list[tuple[str, str | None, bytes]], finals: dict[str, list[dict[str, object]]], good: list[str]
) -> None:
    for code, task_id, _ in cases:
        if task_id is not None:
            assert [e["status"] for e in finals[task_id]] == [4], task_id
            error = finals[task_id][0]["error"]
            assert isinstance(error, dict) and error["code"] == code and error["message"], (task_id, error)
    assert all([e["status"] for e in finals[t]] == [3] for t in good)


def _check_dead_letters(
    cases: list[tuple[str, str | None, bytes]], records: list[object], names: Names
) -> None:
    assert len(records) == len(cases)
    # The DLQ has several partitions: put the dead letters back in the order of their source offsets.
    records = sorted(records, key=lambda r: int(dict(r.headers)["source_offset"]))  # type: ignore[attr-defined]
    headers = [dict(r.headers) for r in records]  # type: ignore[attr-defined]
    assert [h["error_code"].decode() for h in headers] == [code for code, _, _ in cases]
    for record, head, (_, task_id, value) in zip(records, headers, cases, strict=True):
        assert record.value == value  # type: ignore[attr-defined]  # the original bytes, the 1 MB one too
        assert head["source_topic"].decode() == names.tasks and head["source_partition"] == b"0"
        assert int(head["source_offset"]) >= 0 and head["error_message"]
        assert (head.get("task_id", b"").decode() or None) == task_id


def _check_committed_to_end(stack: Stack, names: Names) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, group_id=names.group, enable_auto_commit=False
    )
    try:
        tp = TopicPartition(names.tasks, 0)
        end = consumer.end_offsets([tp])[tp]
        wait_until(lambda: consumer.committed(tp) == end, timeout=30, what="the group committed to the end")
    finally:
        consumer.close(autocommit=False)
