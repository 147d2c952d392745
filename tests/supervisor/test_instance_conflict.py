"""Instance identity: WORKER_INSTANCE_PREFIX in the slot ids, a fenced slot stopped with an alert.

Pure logic with the fakes (no fork, no sleep); the real-process and real-broker proofs are in
tests/supervisor/test_scaling.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_service import exit_codes
from llm_service.errors import ConfigError
from llm_service.instance_id import group_instance_id, holds_prefix, instance_prefix
from llm_service.socket_protocol import Request, parse_request
from llm_service.status_table import StatusTable
from supervisor import instance_claim
from supervisor.health import HealthInputs, find_alerts
from supervisor.limits import HostReading
from supervisor.pool import Pool
from supervisor.slot import SlotState
from tests.supervisor import test_pool
from tests.supervisor.fakes import FakeClock, FakeOps, settings
from tests.supervisor.test_arbiter import World
from tests.supervisor.test_pool import report_running, state_of


def make_pool(table: StatusTable, ops: FakeOps, clock: FakeClock, prefix: str = "") -> Pool:
    pool = test_pool.make_pool(table, ops, clock, hostname="box.example", worker_instance_prefix=prefix)
    pool.fill()
    report_running(table, pool, clock)
    return pool


def test_the_prefix_defaults_to_the_host_name_and_names_every_slot() -> None:
    assert instance_prefix("", "box 1") == "box-1"
    assert instance_prefix("rack-a", "box") == "rack-a"
    assert group_instance_id("rack-a", 3) == "llm-worker-rack-a-3"
    assert holds_prefix("llm-worker-rack-a-3", "rack-a")
    assert not holds_prefix("llm-worker-rack-a-b-3", "rack-a")  # a longer prefix is another host
    assert not holds_prefix("llm-worker-rack-a-", "rack-a")
    assert not holds_prefix("llm-worker-rack-ab-1", "rack-a")


def test_slots_take_the_configured_prefix(table: StatusTable) -> None:
    ops = FakeOps()
    make_pool(table, ops, FakeClock(), prefix="rack-a")
    assert [r.group_instance_id for _, r in ops.spawned] == ["llm-worker-rack-a-0", "llm-worker-rack-a-1"]
    assert [r.hostname for _, r in ops.spawned] == ["box.example"] * 2  # worker_id keeps the host
    ops2, other = FakeOps(), StatusTable.create(2)
    try:
        make_pool(other, ops2, FakeClock())
    finally:
        other.close()
    assert ops2.spawned[0][1].group_instance_id == "llm-worker-box.example-0"


@pytest.mark.parametrize("bad", ["has space", "a/b", "x" * 201])
def test_a_bad_prefix_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="WORKER_INSTANCE_PREFIX"):
        settings(worker_instance_prefix=bad)


def test_a_fenced_worker_stops_its_slot_and_is_not_restarted(
    table: StatusTable, caplog: pytest.LogCaptureFixture
) -> None:
    ops, clock = FakeOps(), FakeClock()
    pool = make_pool(table, ops, clock, prefix="rack-a")
    slot = pool.slots[0]
    spawned = len(ops.spawned)
    clock.advance(60)
    ops.exit(slot.pid, code=exit_codes.FENCED)
    for pid, status in ops.reap():
        assert pool.on_exit(pid, status)
    assert slot.state is SlotState.CONFLICT and not slot.live and len(ops.spawned) == spawned
    assert "fenced by the broker" in slot.last_exit
    assert "llm-worker-rack-a-0" in caplog.text and "not restarted" in caplog.text
    for _ in range(3):  # however long the loop runs, nothing restarts it
        clock.advance(1000)
        pool.fill()
    assert state_of(slot) is SlotState.CONFLICT and len(ops.spawned) == spawned
    assert pool.slots[1].state is SlotState.RUNNING


def test_a_conflict_slot_leaves_on_scale_down_and_on_stop(table: StatusTable) -> None:
    ops, clock = FakeOps(), FakeClock()
    pool = make_pool(table, ops, clock)
    for slot in pool.slots[:2]:
        ops.exit(slot.pid, code=exit_codes.FENCED)
    for pid, status in ops.reap():
        pool.on_exit(pid, status)
    pool.resize(1)
    pool.trim()
    assert [s.state for s in pool.slots[:2]] == [SlotState.CONFLICT, SlotState.STOPPED]
    pool.stop_all(fast=False, deadline=clock.now + 10)
    assert pool.slots[0].state is SlotState.STOPPED and pool.all_down()


def test_instance_conflict_alert_names_the_ids_and_the_group(table: StatusTable) -> None:
    found = find_alerts(
        settings(kafka_group_id="g1"),
        HealthInputs(
            states=[SlotState.CONFLICT, SlotState.RUNNING],
            snapshots=[table.read(1)],
            host=HostReading(cpu_percent=1, ram_percent=1, disk_free_mb=50_000),
            kafka_errors_per_min=0.0,
            lag_s=None,
            conflicts=("llm-worker-h-0",),
        ),
    )
    level, message = found["instance_conflict"]
    assert level == "critical"
    assert "llm-worker-h-0" in message and "g1" in message and "WORKER_INSTANCE_PREFIX" in message


def test_the_arbiter_reports_a_conflict_in_health_and_status(tmp_path: Path) -> None:
    world = World(tmp_path)
    try:
        world.arbiter.pool.fill()
        world.run_workers()
        world.step()
        victim = world.arbiter.pool.slots[1]
        world.ops.exit(victim.pid, code=exit_codes.FENCED)
        world.step()
        health = world.arbiter.handle_request(_request("health"))
        assert health["health"] == "failing"
        assert [a["name"] for a in health["alerts"]] == ["instance_conflict"]
        rows = world.arbiter.status()["workers"]
        assert rows[1]["state"] == "CONFLICT" and rows[1]["group_instance_id"] == "llm-worker-h-1"
        assert rows[0]["state"] == "RUNNING"
    finally:
        world.close()


def _request(cmd: str) -> Request:
    return parse_request(json.dumps({"cmd": cmd}).encode())


def test_the_claim_reads_the_probe_answer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    taken = instance_claim._read(b'{"holders": ["llm-worker-a-0"], "seen": ["llm-worker-a-0"]}\n')
    assert taken.refused and taken.holders == ("llm-worker-a-0",)
    expired = instance_claim._read(b'{"holders": [], "seen": ["llm-worker-a-1"]}\n')
    assert not expired.refused and not expired.skipped and "expired" in caplog.text
    down = instance_claim._read(b'{"error": "KafkaTimeoutError: Unable to bootstrap"}\n')
    assert not down.refused and "Unable to bootstrap" in down.skipped
    assert instance_claim._read(b"").skipped


def test_an_unreachable_broker_skips_the_check_in_bounded_time() -> None:
    """Nothing listens on port 1: the probe gives up after its bootstrap timeout, start-up goes on."""
    claim = instance_claim.check_prefix(
        settings(kafka_bootstrap_servers="127.0.0.1:1", kafka_session_timeout_ms=1000), "p"
    )
    assert not claim.refused and claim.skipped


def test_a_previous_run_of_this_supervisor_is_recognised_by_its_record(tmp_path: Path) -> None:
    record = tmp_path / "s.sock.instance"
    assert instance_claim.previous_run_gone(record, prefix="p", group="g", pid=os.getpid()) is None
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    instance_claim.write_record(record, prefix="p", group="g", pid=gone.pid)
    assert instance_claim.previous_run_gone(record, prefix="p", group="g", pid=os.getpid()) == gone.pid
    assert instance_claim.previous_run_gone(record, prefix="q", group="g", pid=os.getpid()) is None
    assert instance_claim.previous_run_gone(record, prefix="p", group="h", pid=os.getpid()) is None
    instance_claim.write_record(record, prefix="p", group="g", pid=os.getppid())  # alive: another run
    assert instance_claim.previous_run_gone(record, prefix="p", group="g", pid=os.getpid()) is None
    instance_claim.write_record(record, prefix="p", group="g", pid=1)  # PID 1 again: a restarted container
    assert instance_claim.previous_run_gone(record, prefix="p", group="g", pid=1) == 1
    record.write_text("{not json", encoding="utf-8")
    assert instance_claim.previous_run_gone(record, prefix="p", group="g", pid=os.getpid()) is None


@pytest.mark.parametrize("pid", ["0", "-1", "9" * 40, "x", "null"])
def test_a_damaged_instance_record_is_no_previous_run(tmp_path: Path, pid: str) -> None:
    record = tmp_path / "sup.sock.instance"
    record.write_text(
        f'{{"prefix": "p", "group": "g", "pid": {pid if pid != "x" else chr(34) + pid + chr(34)}}}'
    )
    assert instance_claim.previous_run_gone(record, prefix="p", group="g", pid=os.getpid()) is None
