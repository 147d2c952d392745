"""A second worker joins while the first has tasks in flight (cooperative-sticky rebalance, real stack):
the first finishes what it holds of the moved partitions, commits, hands them over; nothing is lost,
nothing runs twice."""

from __future__ import annotations

import pytest

from tests.worker.conftest import Testbed
from tests.worker.harness import send, task_bytes, wait_until

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
