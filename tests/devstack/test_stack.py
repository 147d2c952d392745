"""The local stack's parts are real and answer: broker, S3 server, emulator, the runbook's Kafka tools."""

from __future__ import annotations

import io
import shutil
import subprocess
import uuid
from typing import Any

import requests
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

from devstack.stack import TASK_PARTITIONS, Stack


def _sent_once(
    stack: Stack, topic: str, value: bytes, key: bytes | None = None, **options: Any
) -> KafkaConsumer:
    """Send one message to ``topic``; a consumer of a group named after it reads from the start."""
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    producer.send(topic, key=key, value=value).get(timeout=30)
    producer.close()
    return KafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=topic,
        auto_offset_reset="earliest",
        consumer_timeout_ms=20000,
        **options,
    )


def test_broker_round_trips_a_message(stack: Stack, unique_name: str) -> None:
    stack.create_topic(unique_name, partitions=2)
    consumer = _sent_once(stack, unique_name, "привет".encode(), key=b"k")
    try:
        received = next(iter(consumer))
    finally:
        consumer.close()
    assert (received.key, received.value.decode()) == (b"k", "привет")


def test_service_topics_exist_with_partitions(stack: Stack) -> None:
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        described = {
            t["name"]: t for t in admin.describe_topics(["tasks_llm", "tasks_llm_status", "tasks_llm_dlq"])
        }
    finally:
        admin.close()
    assert len(described["tasks_llm"]["partitions"]) == TASK_PARTITIONS
    assert len(described["tasks_llm_status"]["partitions"]) >= 1
    assert len(described["tasks_llm_dlq"]["partitions"]) >= 1


def test_s3_server_stores_objects_through_the_minio_client(stack: Stack) -> None:
    client = stack.s3.client()
    assert client.bucket_exists("llm-input") and client.bucket_exists("llm-output")
    key = f"docs/{uuid.uuid4().hex}.txt"
    body = "Съешь же ещё этих мягких французских булок".encode()
    client.put_object("llm-input", key, io.BytesIO(body), len(body), content_type="text/plain; charset=utf-8")
    assert client.stat_object("llm-input", key).size == len(body)
    response = client.get_object("llm-input", key)
    try:
        assert response.read() == body
    finally:
        response.close()
        response.release_conn()
    assert key in [o.object_name for o in client.list_objects("llm-input", prefix="docs/", recursive=True)]


def test_emulator_answers_oauth_with_the_stack_key(stack: Stack) -> None:
    env = stack.env()
    reply = requests.post(
        env["GIGACHAT_AUTH_URL"],
        data={"scope": "GIGACHAT_API_PERS"},
        timeout=10,
        headers={
            "Authorization": f"Basic {env['GIGACHAT_AUTH_KEY']}",
            "RqUID": str(uuid.uuid4()),
        },
    )
    assert reply.status_code == 200
    assert set(reply.json()) >= {"access_token", "expires_at"}


def test_runbook_consumer_groups_command_runs_against_the_broker(stack: Stack, unique_name: str) -> None:
    stack.create_topic(unique_name, partitions=1)
    consumer = _sent_once(stack, unique_name, b"x", enable_auto_commit=False)
    next(iter(consumer))
    consumer.commit()
    consumer.close()
    # The installed console script, as the runbook types it (only the port differs on the test stack).
    assert shutil.which("kafka-consumer-groups"), (
        "pip install . must provide the kafka-consumer-groups wrapper"
    )
    done = subprocess.run(
        [
            "kafka-consumer-groups",
            "--bootstrap-server",
            f"localhost:{stack.ports.kafka}",
            "--describe",
            "--group",
            unique_name,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "CURRENT-OFFSET" in done.stdout and unique_name in done.stdout
    topics = stack.kafka_tool(
        "kafka-topics", "--bootstrap-server", stack.kafka_bootstrap, "--describe", "--topic", "tasks_llm"
    )
    assert topics.returncode == 0, topics.stderr
    assert f"PartitionCount: {TASK_PARTITIONS}" in topics.stdout
