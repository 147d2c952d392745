"""A second worker joins while the first has tasks in flight (cooperative-sticky rebalance, real stack):
the first finishes what it holds of the moved partitions, commits, hands them over; nothing is lost,
nothing runs twice."""

from __future__ import annotations

import time

import pytest
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from tests.waiting import wait_until
from tests.worker.conftest import Testbed
from tests.worker.harness import Names, WorkerProcess, create_topics, send, task_bytes

pytestmark = pytest.mark.stack


def test_scale_up_moves_partitions_without_losing_or_repeating_tasks(bed: Testbed) -> None:
    bed.emulator.config(latency=0.4)
    status_log = bed.status_log()
    ids = [f"{bed.names.group}-r{i:02d}" for i in range(80)]
    for task_id in ids:
        send(bed.producer, bed.names.tasks, task_bytes(task_id, prompt="Summarise"), key=task_id.encode())
    env = bed.env(WORKER_MAX_CONCURRENT_TASKS="4")
    first = bed.start_worker(env, slot=1, name="first").started()
    first.wait_for_log("processed in", count=8, timeout=60)

    second = bed.start_worker(env, slot=2, name="second").started()
    first.wait_for_log("Partitions revoked", timeout=60)
    finals = status_log.wait_finals(ids, timeout=120)

    assert {t: [e["status"] for e in v] for t, v in finals.items() if [e["status"] for e in v] != [3]} == {}
    assert "processed in" in second.log_text(), "the new worker should have taken tasks over"
    calls = bed.emulator.ok_calls_per_task()
    assert {t: calls.get(t) for t in ids if calls.get(t) != 1} == {}
    wait_until(
        lambda: "Failed to process" not in first.log_text() + second.log_text(), timeout=1, what="no failure"
    )


def test_two_workers_starting_together_both_own_partitions_and_commit(bed: Testbed) -> None:
    """Two workers join a fresh group ~20 ms apart under load; within 6 s (session timeout 10 s) both
    own partitions and commits go through. Without llm_worker/join_guard.py a worker sometimes kept
    every partition with its join result unapplied, could not commit, and was expelled only after
    the session timeout (docs/worker.md, "A rebalance kafka-python forgot"). Three fresh groups per run,
    because the race is timing-dependent."""
    bed.emulator.config(latency=1.0)
    admin = KafkaAdminClient(bootstrap_servers=bed.stack.kafka_bootstrap)
    try:
        for attempt in range(3):
            names = Names.fresh(f"{bed.names.group}-{attempt}")
            create_topics(bed.stack, names, partitions=4)
            for i in range(40):
                task_id = f"{names.group}-t{i:02d}"
                send(bed.producer, names.tasks, task_bytes(task_id, prompt="Hi"), key=task_id.encode())
            env = bed.env(**names.env(), KAFKA_SESSION_TIMEOUT_MS="10000", WORKER_MAX_CONCURRENT_TASKS="8")
            workers: list[WorkerProcess] = []
            for slot in (1, 0):
                workers.append(bed.start_worker(env, slot=slot, name=f"together{attempt}-{slot}"))
                time.sleep(0.02)
            for worker in workers:
                worker.wait_for_log("Worker started, listening to Kafka topic", timeout=60)
            began = time.monotonic()

            def settled(names: Names = names, workers: list[WorkerProcess] = workers) -> bool:
                if not all("Partitions assigned" in w.log_text() for w in workers):
                    return False
                try:
                    offsets = admin.list_group_offsets(names.group).get(names.group, {})
                except KafkaError:  # the group's coordinator is still loading
                    return False
                return sum(max(0, o.offset) for o in offsets.values()) >= 8

            wait_until(settled, timeout=6, what=f"both own partitions, commit (group {attempt})", step=0.2)
            assert time.monotonic() - began < 6
            for worker in workers:
                assert worker.stop(timeout=30) == 0
    finally:
        admin.close()
