"""``kill -9`` of a worker with tasks in flight, on the real stack: a new worker of the same slot finishes
every task, and no task whose result was already written reaches the model a second time."""

from __future__ import annotations

import pytest

from llm_worker.task_message import FINAL_MARKER_PREFIX
from tests.waiting import wait_until
from tests.worker.conftest import Testbed
from tests.worker.harness import send, task_bytes

pytestmark = pytest.mark.stack


def test_kill_9_loses_nothing_and_bills_nothing_twice(bed: Testbed) -> None:
    names, s3, status_log, emulator, producer = (
        bed.names,
        bed.s3,
        bed.status_log(),
        bed.emulator,
        bed.producer,
    )
    emulator.config(latency=0.5)
    ids = [f"{names.group}-k{i:02d}" for i in range(48)]
    for task_id in ids:
        send(producer, names.tasks, task_bytes(task_id, prompt=f"Summarise {task_id}"), key=task_id.encode())
    env = bed.env(WORKER_MAX_CONCURRENT_TASKS="8")
    first = bed.start_worker(env, slot=1, name="first").started()
    first.wait_for_log("processed in", count=12, timeout=60)
    first.wait_for_log("Processing task", count=20, timeout=60)  # more taken than finished: some in flight

    first.kill9()
    written = {
        o.object_name.rsplit("/", 1)[-1].removesuffix(".json")
        for o in s3.list_objects("llm-output", prefix=names.prefix, recursive=True)
    }
    marked = {
        o.object_name.rsplit("/", 1)[-1].removesuffix(".json")
        for o in s3.list_objects("llm-output", prefix=f"{FINAL_MARKER_PREFIX}{names.prefix}", recursive=True)
    }
    status_log.read()
    unfinished = {e["task_id"] for e in status_log.events() if e["status"] == 1} - set(status_log.finals())
    assert written and unfinished, "the kill should hit a worker with results written and tasks in flight"

    second = bed.start_worker(env, slot=1, name="second").started()
    finals = status_log.wait_finals(ids, timeout=120)

    assert all(event["status"] == 3 for events in finals.values() for event in events)
    assert marked, "some tasks should have had their final status noted before the kill"
    calls = emulator.ok_calls_per_task()
    assert {t: calls.get(t) for t in written if calls.get(t) != 1} == {}, (
        "a written result was paid for twice"
    )
    assert all(calls.get(t, 0) >= 1 for t in ids)
    reemitted = [t for t in written if f"Task {t} already has its result" in second.log_text()]
    wait_until(
        lambda: len(list(s3.list_objects("llm-output", prefix=names.prefix, recursive=True))) == len(ids),
        timeout=30,
        what="a result object per task",
    )
    assert set(reemitted) <= written
    # Let the second worker finish what it took (redeliveries included), then count final statuses.
    assert second.stop() == 0
    status_log.read()
    finals = status_log.finals()
    repeated = {t: len(finals[t]) for t in marked if len(finals[t]) != 1}
    assert repeated == {}, "a task whose final status was acknowledged got another one after the crash"
