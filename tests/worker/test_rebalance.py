"""A second worker joins while the first has tasks in flight (cooperative-sticky rebalance, real stack):
the first finishes what it holds of the moved partitions, commits, hands them over; nothing is lost,
nothing runs twice."""

from __future__ import annotations

import time

import pytest

from tests import kafka_groups
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
    second.wait_for_log("Partitions assigned", timeout=60)
    # On a busy machine the first worker may finish the moved partitions' backlog before the
    # rebalance ends; tasks sent now land on both workers' partitions whatever the timing.
    late = [f"{bed.names.group}-late{i:02d}" for i in range(20)]
    for task_id in late:
        send(bed.producer, bed.names.tasks, task_bytes(task_id, prompt="Summarise"), key=task_id.encode())
    ids += late
    finals = status_log.wait_finals(ids, timeout=120)

    assert {t: [e["status"] for e in v] for t, v in finals.items() if [e["status"] for e in v] != [3]} == {}
    assert "processed in" in second.log_text(), "the new worker should have taken tasks over"
    calls = bed.emulator.ok_calls_per_task()
    assert {t: calls.get(t) for t in ids if calls.get(t) != 1} == {}
    wait_until(
        lambda: "Failed to process" not in first.log_text() + second.log_text(), timeout=1, what="no failure"
    )


def group_rows(bed: Testbed, group: str) -> list[list[str]]:
    """The broker's view of a group, one row per partition: TOPIC PARTITION CURRENT-OFFSET
    LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID (after the group name)."""
    return [row[1:] for row in kafka_groups.group_rows(bed.stack, group)]


def test_two_workers_starting_together_both_own_partitions_and_commit(bed: Testbed) -> None:
    """Two workers join a fresh group ~20 ms apart; the group settles with both owning partitions and
    every task committed. The race this catches (docs/worker.md, "Rebalances"): a join result that
    kafka-python finished while nobody awaited it left one member REBALANCING for good (it kept
    every partition, could not commit, and was expelled after the session timeout without ever
    rejoining), so the state below was never reached, however long the wait. The deadline is about
    a busy machine, not speed. Three fresh groups per run, because the race is timing-dependent."""
    bed.emulator.config(latency=1.0)
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
            time.sleep(0.02)  # not a wait: the two joins must race
        for worker in workers:
            worker.wait_for_log("Worker started, listening to Kafka topic", timeout=120)

        def settled(names: Names = names) -> bool:
            rows = group_rows(bed, names.group)
            owners = {row[5] for row in rows if len(row) >= 6}
            all_committed = len(rows) == 4 and all(len(row) >= 5 and row[4] == "0" for row in rows)
            return all_committed and len(owners - {"-"}) == 2

        wait_until(
            settled, timeout=120, what=f"two members own partitions, all committed ({attempt})", step=0.5
        )
        for worker in workers:
            assert "Partitions assigned" in worker.log_text()
            assert worker.stop(timeout=30) == 0
