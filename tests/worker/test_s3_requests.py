"""S3 requests per task, counted by a real S3 server (versitygw's access log), for a real worker.

A first delivery (an offset no process started before: above the fence its ownership read, see
llm_worker/offsets.py) costs three requests: the final-status marker HEAD, the result PUT and the
marker PUT. A message that was already waiting when the worker took the partition may be a
redelivery and pays the result HEAD as well; one whose result an earlier delivery wrote gets its
COMPLETED from it, without a model call; so does a first delivery keyed by something else than its
task_id, and the redelivery of a first delivery killed mid-call (kill -9). Kafka and the emulator
come from the session stack; the S3 server is private, for its log.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from devstack.paths import cache_dir
from devstack.procs import free_port
from devstack.s3 import ACCESS_KEY, SECRET_KEY, S3Server
from llm_worker.task_message import FINAL_MARKER_PREFIX
from tests.waiting import wait_until
from tests.worker.conftest import Testbed
from tests.worker.harness import Names, StatusLog, private_s3, send, task_bytes

pytestmark = pytest.mark.stack

# "... [02/December/2026:01:47:59 +0000] 127.0.0.1 llm-dev <id> s3_HeadObject <key> /<bucket>/<key> 404 ..."
_REQUEST = re.compile(r"\] \S+ \S+ \S+ s3_(\w+) (\S+) \S+ (\d{3}) ")


@pytest.fixture(scope="module")
def logged_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    folder = tmp_path_factory.mktemp("s3-logged")
    server = S3Server(cache=cache_dir(), run_dir=folder, port=free_port(), access_log=folder / "access.log")
    with private_s3(server):
        yield server


def _requests(server: S3Server, result_key: str) -> list[tuple[str, str, int]]:
    """(operation, "result" or "marker", HTTP status) of every request on a task's two objects, in order."""
    assert server.access_log is not None
    names = {result_key: "result", f"{FINAL_MARKER_PREFIX}{result_key}": "marker"}
    seen = []
    for line in Path(server.access_log).read_text(errors="replace").splitlines():
        match = _REQUEST.search(line)
        if match and match.group(2) in names:
            seen.append((match.group(1), names[match.group(2)], int(match.group(3))))
    return seen


def _one_partition(bed: Testbed, logged_s3: S3Server) -> tuple[Names, dict[str, str], StatusLog]:
    """A one-partition topic (so "before" and "after" are one order), a worker env on the logged S3."""
    names = bed.create(partitions=1)
    env = bed.env(MINIO_ENDPOINT=logged_s3.endpoint, MINIO_ACCESS_KEY=ACCESS_KEY, MINIO_SECRET_KEY=SECRET_KEY)
    return names, env, bed.status_log()


def _wait_committed(bed: Testbed, names: Names, offset: int) -> None:
    """Until the group's commit of the single partition reaches ``offset``."""
    consumer = KafkaConsumer(
        bootstrap_servers=bed.stack.kafka_bootstrap, group_id=names.group, enable_auto_commit=False
    )
    try:
        tp = TopicPartition(names.tasks, 0)
        wait_until(lambda: (consumer.committed(tp) or 0) >= offset, timeout=60, what=f"commit at {offset}")
    finally:
        consumer.close(autocommit=False)


def test_a_first_delivery_costs_three_s3_requests_and_a_waiting_message_pays_the_checks(
    bed: Testbed, logged_s3: S3Server
) -> None:
    names, env, status_log = _one_partition(bed, logged_s3)
    uid = names.tasks.removesuffix("-tasks")
    waiting, written, keyed = f"{uid}-waiting", f"{uid}-written", f"{uid}-keyed-otherwise"
    for task_id in (written, keyed):  # an earlier delivery wrote its result and died before its status
        body = json.dumps({"task_id": task_id, "model": "GigaChat", "usage": {"total_tokens": 5}}).encode()
        logged_s3.client().put_object(
            "llm-output", f"{names.prefix}{task_id}.json", io.BytesIO(body), len(body)
        )
    for task_id in (waiting, written):  # sent before any worker owns the partition: below its fence
        send(bed.producer, names.tasks, task_bytes(task_id, prompt="p"), key=task_id.encode())
    bed.start_worker(env).started()
    status_log.wait_finals([waiting, written], timeout=90)
    _wait_committed(bed, names, 2)  # ended, as the worker sees it: else the next ones would pay too

    fresh = [f"{uid}-fresh-{i}" for i in range(5)]
    for task_id in fresh:
        send(bed.producer, names.tasks, task_bytes(task_id, prompt="p"), key=task_id.encode())
    # Above the fence too, but keyed otherwise: another message of the task may be on any partition.
    send(bed.producer, names.tasks, task_bytes(keyed, prompt="p"), key=b"not-the-task-id")
    finals = status_log.wait_finals([*fresh, keyed], timeout=90)
    assert all([e["status"] for e in finals[t]] == [3] for t in [*fresh, keyed]), finals

    first = [("HeadObject", "marker", 404), ("PutObject", "result", 200), ("PutObject", "marker", 200)]
    for task_id in fresh:
        wait_until(
            lambda t=task_id: _requests(logged_s3, f"{names.prefix}{t}.json") == first,  # type: ignore[misc]
            timeout=30,
            what=f"the three requests of {task_id} in the access log: {first}",
        )
    assert _requests(logged_s3, f"{names.prefix}{waiting}.json") == [
        ("HeadObject", "marker", 404),
        ("HeadObject", "result", 404),
        ("PutObject", "result", 200),
        ("PutObject", "marker", 200),
    ]
    assert _requests(logged_s3, f"{names.prefix}{written}.json") == [
        ("PutObject", "result", 200),  # the test's, as the dead delivery
        ("HeadObject", "marker", 404),
        ("HeadObject", "result", 200),
        ("GetObject", "result", 200),
        ("PutObject", "marker", 200),
    ]
    # The marker is written after the final status is acknowledged: it may reach the log a moment later.
    wait_until(
        lambda: (
            _requests(logged_s3, f"{names.prefix}{written}.json")
            == _requests(logged_s3, f"{names.prefix}{keyed}.json")
        ),
        timeout=30,
        what=f"{keyed}'s requests in the access log, the same as {written}'s",
    )
    assert bed.emulator.calls_per_task().get(written, 0) == bed.emulator.calls_per_task().get(keyed, 0) == 0


def test_a_first_delivery_killed_mid_call_is_redelivered_as_a_possible_redelivery(
    bed: Testbed, logged_s3: S3Server
) -> None:
    names, env, status_log = _one_partition(bed, logged_s3)
    uid = names.tasks.removesuffix("-tasks")
    first = bed.start_worker(env, slot=1, name="first").started()
    warm = f"{uid}-warm"  # ends once the worker's fence is read: what is sent next lies above it
    send(bed.producer, names.tasks, task_bytes(warm, prompt="p"), key=warm.encode())
    status_log.wait_finals([warm], timeout=90)
    _wait_committed(bed, names, 1)

    bed.emulator.config(latency=30.0)
    task_id = f"{uid}-killed"
    send(bed.producer, names.tasks, task_bytes(task_id, prompt="p"), key=task_id.encode())

    def calling() -> bool:
        status_log.read()
        return any(e["task_id"] == task_id and e["status"] == 2 for e in status_log.events())

    wait_until(calling, timeout=60, what="the task's model call under way")
    first.kill9()
    result_key = f"{names.prefix}{task_id}.json"
    assert _requests(logged_s3, result_key) == [("HeadObject", "marker", 404)], "a first delivery"

    bed.emulator.config(latency=0.0)
    bed.start_worker(env, slot=1, name="second").started()
    finals = status_log.wait_finals([task_id], timeout=120)
    assert [e["status"] for e in finals[task_id]] == [3]
    wait_until(
        lambda: len(_requests(logged_s3, result_key)) >= 5,
        timeout=30,
        what="the redelivery's requests logged",
    )
    assert _requests(logged_s3, result_key) == [
        ("HeadObject", "marker", 404),  # the killed first delivery
        ("HeadObject", "marker", 404),  # its redelivery, below the new process's fence: both checks
        ("HeadObject", "result", 404),
        ("PutObject", "result", 200),
        ("PutObject", "marker", 200),
    ]
