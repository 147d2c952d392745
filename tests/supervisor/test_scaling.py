"""Two supervisors in one consumer group, on the real stack (Kafka, S3, the GigaChat emulator).

Issue 9 item 4: a second supervisor with a prefix already held refuses to start; a process that takes
a slot's identity anyway gets that slot stopped with the ``instance_conflict`` alert, never a restart
loop; two supervisors with their own prefixes share the partitions, and when one is killed with its
workers (kill -9 of its process group) the other takes every partition and finishes every task.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from devstack.stack import Stack
from llm_service import exit_codes
from tests.supervisor.conftest import SendTasks, StartSupervisor
from tests.supervisor.harness import Supervisor
from tests.waiting import wait_until
from tests.worker.harness import EmulatorControl, Names, StatusLog, WorkerProcess, hold_for

pytestmark = pytest.mark.stack

SESSION_MS = "6000"  # the broker's smallest allowed session timeout: a dead host's slots expire soon


def group_instance_ids(stack: Stack, group: str) -> set[str]:
    """The static members of ``group`` the broker holds now (live, or dead within the session timeout)."""
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, client_id="test-scaling")
    try:
        described: dict[str, Any] = admin.describe_groups([group]).get(group) or {}
    finally:
        admin.close()
    return {m["group_instance_id"] for m in described.get("members") or [] if m.get("group_instance_id")}


def worker_ids(sup: Supervisor) -> set[str]:
    return {w["worker_id"] for w in sup.workers() if w["worker_id"]}


def test_a_second_supervisor_with_a_held_prefix_refuses_to_start(
    start_real: StartSupervisor, stack: Stack, names: Names, tmp_path: Path
) -> None:
    first = start_real(WORKER_INSTANCE_PREFIX="rack-a", KAFKA_SESSION_TIMEOUT_MS=SESSION_MS)
    first.running(2, timeout=60)
    wait_until(
        lambda: group_instance_ids(stack, names.group) == {"llm-worker-rack-a-0", "llm-worker-rack-a-1"},
        timeout=60,
        what="both slots of rack-a in the group",
    )
    second = start_real(WORKER_INSTANCE_PREFIX="rack-a", KAFKA_SESSION_TIMEOUT_MS=SESSION_MS)
    assert second.wait_exit(timeout=90) == exit_codes.INSTANCE_CONFLICT
    assert "Cannot start: WORKER_INSTANCE_PREFIX=rack-a is held in group" in second.log_text()
    assert "llm-worker-rack-a-0" in second.log_text()
    rows = first.workers()
    assert [w["state"] for w in rows] == ["RUNNING", "RUNNING"] and [w["restarts"] for w in rows] == [0, 0]
    assert first.ask("health")["health"] == "ok"
    # The same supervisor restarted after kill -9 (same socket, so its record): no wait, no refusal.
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    again = Supervisor(env=first.env, tmp_path=tmp_path, fake=False, name="real0")
    try:
        assert [w["state"] for w in again.running(2, timeout=60)] == ["RUNNING", "RUNNING"]
        assert "held by this supervisor's previous run" in again.log_text()
    finally:
        again.stop(timeout=60)


def test_a_process_taking_a_slot_identity_stops_that_slot_with_an_alert_and_nothing_loops(
    start_real: StartSupervisor, stack: Stack, names: Names, tmp_path: Path
) -> None:
    """The race the start-up check cannot see (both started at once): one side is fenced and stops."""
    sup = start_real(WORKER_INSTANCE_PREFIX="rack-b", KAFKA_SESSION_TIMEOUT_MS=SESSION_MS)
    sup.running(2, timeout=60)
    intruder = WorkerProcess(env=sup.env, log_path=tmp_path / "intruder.log", slot=0)
    try:
        intruder.started(timeout=90)

        def slot0_conflict() -> dict[str, Any] | None:
            row = sup.workers()[0]
            return row if row["state"] == "CONFLICT" else None

        row = wait_until(slot0_conflict, timeout=90, what="slot 0 stopped in CONFLICT")
        assert row["group_instance_id"] == "llm-worker-rack-b-0" and "fenced" in row["last_exit"]
        health = sup.ask("health")
        assert health["health"] == "failing"
        alert = next(a for a in health["alerts"] if a["name"] == "instance_conflict")
        assert "llm-worker-rack-b-0" in alert["message"] and names.group in alert["message"]
        # Nothing loops: slot 0 is not restarted, slot 1 and the intruder keep running.
        hold_for(
            lambda: [(w["state"], w["restarts"]) for w in sup.workers()] == [("CONFLICT", 0), ("RUNNING", 0)],
            seconds=15,
            what="no restarts",
        )
        assert intruder.proc.poll() is None
        assert sup.log_text().count("Alert raised: instance_conflict") == 1
    finally:
        intruder.stop()


def test_two_hosts_share_the_partitions_and_one_takes_over_when_the_other_is_killed(
    *,
    start_real: StartSupervisor,
    stack: Stack,
    send_tasks: SendTasks,
    names: Names,
    status_log: StatusLog,
    emulator: EmulatorControl,
) -> None:
    emulator.config(latency=0.3)
    common = {"KAFKA_SESSION_TIMEOUT_MS": SESSION_MS, "WORKER_MAX_CONCURRENT_TASKS": "4"}
    host_a = start_real(WORKER_INSTANCE_PREFIX="host-a", **common)
    host_b = start_real(WORKER_INSTANCE_PREFIX="host-b", **common)
    ids_a = {w["worker_id"] for w in host_a.running(2, timeout=90)}
    ids_b = {w["worker_id"] for w in host_b.running(2, timeout=90)}
    tasks = send_tasks("two", 400)

    def both_working() -> bool:
        status_log.read(0.1)
        by = {e["worker_id"] for e in status_log.events()}
        return bool(by & ids_a) and bool(by & ids_b)

    wait_until(both_working, timeout=90, what="both hosts processing tasks")
    in_flight_max = 2 * 4  # host A's workers x WORKER_MAX_CONCURRENT_TASKS
    os.killpg(host_a.proc.pid, signal.SIGKILL)  # the whole host: supervisor and workers at once
    host_a.proc.wait(timeout=10)
    wait_until(
        lambda: group_instance_ids(stack, names.group) == {"llm-worker-host-b-0", "llm-worker-host-b-1"},
        timeout=90,
        what="host A's static members expired from the group",
    )
    finals = status_log.wait_finals(tasks, timeout=240)
    failed = {t: e for t, events in finals.items() for e in events if e["status"] != 3}
    assert not failed, f"{len(failed)} tasks did not complete: {list(failed.items())[:3]}"
    repeated = sum(1 for events in finals.values() if len(events) > 1)
    assert repeated <= in_flight_max, f"{repeated} tasks got a second final status"
    processed = Counter("A" if e["worker_id"] in ids_a else "B" for e in status_log.events())
    print(f"status events by host: {dict(processed)}; tasks with a repeated final status: {repeated}")
    assert [w["state"] for w in host_b.workers()] == ["RUNNING", "RUNNING"]
    assert worker_ids(host_b) == ids_b  # B's workers took A's partitions without a restart
