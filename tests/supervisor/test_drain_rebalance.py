"""`llmctl drain` holds across a rebalance (real ``llm-supervisor``, real worker, real stack).

Partitions that reach a worker while intake is paused must start paused: the worker that a scale-up
adds, and a worker restarted (kill -9) while drained, deliver nothing until `resume`. Before the fix the new
worker fetched from its fresh partitions in the very poll that completed the join and started as
many tasks as it had places.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from devstack.stack import Stack
from tests.kafka_groups import group_rows
from tests.supervisor.conftest import SendTasks, StartSupervisor
from tests.supervisor.harness import Supervisor
from tests.supervisor.test_process_real_worker import assert_all_completed
from tests.waiting import wait_until
from tests.worker.harness import EmulatorControl, Names, StatusLog

pytestmark = pytest.mark.stack


def group_settled(stack: Stack, group: str, members: int) -> bool:
    """The broker says: the group is Stable and each of ``members`` members owns a partition."""
    if not any("Stable" in row for row in group_rows(stack, group, "--state")):
        return False
    owned = [row[-1] for row in group_rows(stack, group, "--members")]
    return len(owned) == members and all(n.isdigit() and int(n) > 0 for n in owned)


def both_paused(sup: Supervisor) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = wait_until(
        lambda: (rows := sup.workers()) and [w.get("worker_state") for w in rows] == ["PAUSED"] * 2 and rows,
        timeout=60,
        what="both workers PAUSED",
    )
    return rows


def assert_nothing_started(sup: Supervisor, status_log: StatusLog) -> None:
    status_log.read(1.0)
    started = sorted({e["task_id"] for e in status_log.events()})
    assert started == [], f"{len(started)} tasks started while drained: {started[:5]}"
    assert "Processing task" not in sup.log_text()
    assert all(w["in_flight"] == 0 for w in sup.workers())


def test_partitions_assigned_while_drained_start_paused(
    *,
    start_real: StartSupervisor,
    send_tasks: SendTasks,
    names: Names,
    status_log: StatusLog,
    emulator: EmulatorControl,
    stack: Stack,
) -> None:
    emulator.config(latency=0.2)
    sup = start_real(WORKER_PROCESSES="1", WORKER_MAX_CONCURRENT_TASKS="8")
    first = sup.running(1, timeout=60)[0]
    wait_until(lambda: group_settled(stack, names.group, 1), timeout=60, what="one member owns all")
    assert sup.ask("drain")["intake_paused"] is True
    wait_until(
        lambda: [w.get("worker_state") for w in sup.workers()] == ["PAUSED"],
        timeout=30,
        what="worker 0 PAUSED",
    )
    ids = send_tasks("drained", 30)

    assert sup.ask("scale", n=2)["ok"]
    # State, not time: the new worker logged its partitions, the broker shows a Stable group with
    # both members owning partitions, and both workers have reported PAUSED since. Before the fix a
    # fresh partition delivered in the very poll that completed the join, long before all this.
    assigned = "llm-worker[1] - INFO - Partitions assigned"
    wait_until(lambda: assigned in sup.log_text(), timeout=90, what="worker 1 assigned partitions")
    wait_until(lambda: group_settled(stack, names.group, 2), timeout=90, what="two members own partitions")
    rows = both_paused(sup)
    assert rows[0]["pid"] == first["pid"]
    assert_nothing_started(sup, status_log)

    # A worker restarted while drained (kill -9; its slot takes its partitions back) starts paused too.
    os.kill(rows[1]["pid"], signal.SIGKILL)
    wait_until(lambda: sup.log_text().count(assigned) == 2, timeout=90, what="the new worker 1 assigned")
    wait_until(lambda: group_settled(stack, names.group, 2), timeout=90, what="two members own partitions")
    assert both_paused(sup)[1]["pid"] != rows[1]["pid"]
    assert_nothing_started(sup, status_log)

    assert sup.ask("resume")["intake_paused"] is False
    assert_all_completed(status_log, ids)
    finals = status_log.finals()
    assert {t: [e["status"] for e in finals[t]] for t in ids if len(finals[t]) != 1} == {}
    workers = {e["worker_id"] for e in status_log.events() if e["task_id"] in ids}
    assert len(workers) == 2, f"both workers should take tasks after resume: {workers}"
