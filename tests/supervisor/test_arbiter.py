"""The arbiter's commands and loop steps with fake processes, clock, meter and notifier: no fork, no sleep."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import selectors
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_service.config import Settings
from llm_service.errors import ConfigError
from llm_service.socket_protocol import COMMANDS, Request, encode_request
from llm_service.status_table import StatusTable, WorkerState
from supervisor.arbiter import HEARTBEAT_SLACK_S, SAMPLE_S, TICK_S, Arbiter, Parts
from supervisor.lifecycle import Life, LifeState
from supervisor.limits import HostReading, ProcReading
from supervisor.sdnotify import Notifier
from supervisor.slot import IllegalTransitionError, SlotState
from tests.supervisor.fakes import FakeClock, FakeMeter, FakeOps, settings
from tests.supervisor.harness import CONTRACT_WORKER_FIELDS


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(address=None)
        self.sent: list[str] = []

    def send(self, *lines: str) -> None:
        self.sent.append(lines[0])


class World:
    def __init__(self, tmp_path: Path, **overrides: object) -> None:
        values: dict[str, object] = {
            "worker_processes": 2,
            "worker_max_processes": 4,
            "supervisor_socket": tmp_path / "s.sock",
            "limit_window_s": 4,
        }
        values.update(overrides)
        self.settings = settings(**values)
        self.next_settings: Settings | ConfigError = self.settings
        self.table = StatusTable.create(4)
        self.ops, self.clock, self.meter = FakeOps(), FakeClock(), FakeMeter()
        self.notifier = RecordingNotifier()
        self.selector = selectors.DefaultSelector()
        parts = Parts(
            table=self.table,
            ops=self.ops,
            clock=self.clock,
            meter=self.meter,
            notifier=self.notifier,
            load_settings=self.load,
            hostname="h",
            rand=lambda: 0.5,
            selector=self.selector,
        )
        self.arbiter = Arbiter(settings=self.settings, parts=parts)

    def load(self) -> Settings:
        if isinstance(self.next_settings, ConfigError):
            raise self.next_settings
        return self.next_settings

    def run_workers(self) -> None:
        for slot in self.arbiter.pool.live_slots():
            self.table.writer(slot.index).update(
                pid=slot.pid, state=WorkerState.RUNNING, heartbeat=self.clock.now
            )

    def step(self) -> None:
        """One loop turn without the wait (the fake clock does not pass while select() sleeps)."""
        self.arbiter.turn(wait=False)

    def close(self) -> None:
        self.table.close()
        self.selector.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.arbiter.pool.fill()
    w.run_workers()
    w.step()
    yield w
    w.close()


def test_ready_once_workers_run(world: World) -> None:
    assert world.notifier.sent.count("READY=1") == 1
    world.step()
    assert world.notifier.sent.count("READY=1") == 1


def test_a_reload_before_the_first_ready_does_not_announce_ready(tmp_path: Path) -> None:
    """systemd would take the service as started while no worker runs yet."""
    w = World(tmp_path)
    try:
        w.next_settings = dataclasses.replace(w.settings, alert_cpu_percent=95.0)  # applied in place
        assert w.arbiter.reload("SIGHUP")["ok"] is True
        assert "READY=1" not in w.notifier.sent
        w.arbiter.pool.fill()
        w.run_workers()
        w.step()
        assert w.notifier.sent.count("READY=1") == 1
    finally:
        w.close()


def test_status_reply_has_the_contract_fields(world: World) -> None:
    reply = world.arbiter.handle_request(Request(cmd="status"))
    assert reply["health"] == "ok" and reply["alerts"] == []
    assert len(reply["workers"]) == 2
    for row in reply["workers"]:
        assert row.keys() >= CONTRACT_WORKER_FIELDS and row["state"] == "RUNNING"
    assert set(reply["system"]) >= {"cpu_percent", "ram_percent", "disk_free_mb", "limits_source"}
    assert reply["system"]["limits_source"] == "host"  # which figures the limits judge
    assert reply["config"]["WORKER_PROCESSES"] == 2


def test_secrets_are_masked_in_status(tmp_path: Path) -> None:
    w = World(tmp_path, gigachat_auth_key="c2VjcmV0", minio_secret_key="hunter2")
    try:
        text = str(w.arbiter.handle_request(Request(cmd="status")))
        assert "hunter2" not in text and "c2VjcmV0" not in text
    finally:
        w.close()


def test_bad_reload_keeps_the_old_config_with_one_clear_line(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.next_settings = ConfigError("WORKER_PROCESSES='two': must be a whole number")
    reply = world.arbiter.reload("SIGHUP")
    assert reply["ok"] is False and "WORKER_PROCESSES" in reply["error"]
    assert world.arbiter.settings is world.settings
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        "Reload (SIGHUP) rejected, keeping the old config: WORKER_PROCESSES='two': must be a whole number"
    ]
    assert world.notifier.sent[-2:] == ["RELOADING=1", "READY=1"]


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({"kafka_group_id": "other-group"}, "KAFKA_GROUP_ID"),
        ({"kafka_tasks_topic": "t2"}, "KAFKA_TASKS_TOPIC"),
        ({"worker_instance_prefix": "other-host"}, "WORKER_INSTANCE_PREFIX"),
    ],
)
def test_a_group_or_topic_change_is_refused_on_reload(
    world: World, caplog: pytest.LogCaptureFixture, change: dict[str, str], refused: str
) -> None:
    world.next_settings = dataclasses.replace(world.settings, gigachat_model="Other", **change)
    reply = world.arbiter.reload("SIGHUP")
    assert reply["ok"] is False and f"{refused} cannot change on reload" in reply["error"]
    assert world.arbiter.settings is world.settings and not world.arbiter.pool.generation
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("Reload (SIGHUP) rejected, keeping the old config: ")
    assert "restart the supervisor" in errors[0]


def test_more_workers_than_the_table_fixed_at_start_is_refused(world: World) -> None:
    world.next_settings = dataclasses.replace(world.settings, worker_processes=6, worker_max_processes=8)
    reply = world.arbiter.reload("SIGHUP")
    assert reply["ok"] is False and "exceeds WORKER_MAX_PROCESSES=4" in reply["error"]
    assert world.arbiter.pool.wanted == 2


def test_a_log_file_that_cannot_be_opened_is_refused_and_logging_stays(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handlers = list(logging.getLogger().handlers)
    (tmp_path / "dir.log").mkdir()  # passes no check when made after loading: opening it fails
    world.next_settings = dataclasses.replace(world.settings, log_file=str(tmp_path / "dir.log"))
    reply = world.arbiter.reload("SIGHUP")
    assert reply["ok"] is False and "LOG_FILE=" in reply["error"] and "cannot open" in reply["error"]
    assert logging.getLogger().handlers == handlers
    assert world.arbiter.settings is world.settings


def test_an_unexpected_error_while_loading_is_a_rejected_reload(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Settings:
        raise RuntimeError("a bug in the loader")

    world.arbiter._p.load_settings = broken
    reply = world.arbiter.reload("SIGHUP")
    assert reply["ok"] is False and "RuntimeError: a bug in the loader" in reply["error"]
    assert world.arbiter.settings is world.settings
    assert any("rejected, keeping the old config" in r.getMessage() for r in caplog.records)


def test_pool_size_and_limits_apply_in_place(world: World) -> None:
    world.next_settings = settings(
        worker_processes=3,
        worker_max_processes=4,
        supervisor_socket=world.settings.supervisor_socket,
        limit_window_s=4,
        limit_cpu_percent=50,
    )
    reply = world.arbiter.reload("llmctl")
    assert reply == {
        "ok": True,
        "changed": ["WORKER_PROCESSES", "LIMIT_CPU_PERCENT"],
        "rolling_restart": False,
    }
    world.step()
    assert [s.state for s in world.arbiter.pool.slots[:3]] == [SlotState.RUNNING] * 2 + [SlotState.STARTING]


def test_worker_visible_change_rolls_one_at_a_time_then_ready(world: World) -> None:
    world.next_settings = settings(
        worker_processes=2,
        worker_max_processes=4,
        limit_window_s=4,
        supervisor_socket=world.settings.supervisor_socket,
        gigachat_model="GigaChat-Pro",
    )
    assert world.arbiter.reload("SIGHUP")["rolling_restart"] is True
    for _ in range(2):
        world.step()
        draining = [s for s in world.arbiter.pool.slots if s.state is SlotState.DRAINING]
        assert len(draining) == 1
        world.ops.exit(draining[0].pid, code=0)
        world.step()
        world.run_workers()
        world.step()
    sent = world.notifier.sent
    assert "READY=1" in sent[sent.index("RELOADING=1") :]
    assert all(r.settings.gigachat_model == "GigaChat-Pro" for _, r in world.ops.spawned[-2:])


def test_two_step_stop(world: World) -> None:
    pids = world.arbiter.pool.pids()
    world.arbiter.stop(fast=False, why="SIGTERM")
    assert all(world.ops.sent(p) == ["SIGTERM"] for p in pids)
    assert "STOPPING=1" in world.notifier.sent
    world.arbiter.stop(fast=False, why="SIGTERM")
    assert all(world.ops.sent(p) == ["SIGTERM", "SIGKILL"] for p in pids)
    for pid in pids:
        world.ops.exit(pid, sig=signal.SIGKILL)
    world.step()
    assert world.arbiter.finished() and world.arbiter.pool.unclean_stop


def test_drain_and_resume_go_through_the_control_area(world: World) -> None:
    assert world.arbiter.handle_request(Request(cmd="drain")) == {"ok": True, "intake_paused": True}
    world.step()
    assert all(world.table.read(i).intake_paused for i in range(2))
    assert world.arbiter.handle_request(Request(cmd="health"))["health"] == "degraded"
    world.arbiter.handle_request(Request(cmd="resume"))
    world.step()
    assert not any(world.table.read(i).intake_paused for i in range(2))


def test_scale_is_bounded(world: World) -> None:
    assert world.arbiter.handle_request(Request(cmd="scale", n=9))["ok"] is False
    assert world.arbiter.handle_request(Request(cmd="scale", n=4)) == {"ok": True, "workers": 4}
    world.step()
    assert sum(s.live for s in world.arbiter.pool.slots) == 4


def test_rss_over_soft_limit_recycles_and_host_load_caps(world: World) -> None:
    pid = world.arbiter.pool.slots[0].pid
    world.meter.procs[pid] = ProcReading(cpu_percent=5, rss_mb=2000)
    world.meter.host_reading = HostReading(cpu_percent=85, ram_percent=10, disk_free_mb=50_000)
    for _ in range(4):
        world.clock.advance(SAMPLE_S)
        world.run_workers()
        world.step()
    assert world.arbiter.pool.slots[0].state is SlotState.DRAINING and world.ops.sent(pid) == ["SIGTERM"]
    assert world.table.read(1).concurrency_cap == 4


def test_signals_map_to_commands(world: World) -> None:
    for sig in (signal.SIGTTIN, signal.SIGTTIN, signal.SIGTTOU):
        world.arbiter._on_signal(sig)
    assert world.arbiter.pool.wanted == 3
    world.arbiter._on_signal(signal.SIGUSR1)
    assert all(world.ops.sent(p) == ["SIGUSR1"] for p in world.arbiter.pool.pids())


def test_the_loop_sleeps_until_the_next_due_item_once_workers_run(tmp_path: Path) -> None:
    silence = 1.5 * SAMPLE_S  # a heartbeat deadline between two samples
    w = World(tmp_path, worker_heartbeat_timeout=silence)
    try:
        w.arbiter.pool.fill()
        assert w.arbiter._timeout() <= TICK_S  # starting workers: their RUNNING is polled for
        w.run_workers()
        w.step()
        w.clock.advance(SAMPLE_S)
        w.run_workers()
        w.step()  # the sample is taken and the workers beat; the next sample is SAMPLE_S away
        assert w.arbiter._timeout() == pytest.approx(SAMPLE_S)  # not woken every TICK_S for nothing
        w.clock.advance(SAMPLE_S / 2)
        w.step()
        w.clock.advance(SAMPLE_S / 2)
        w.step()  # the next sample; no heartbeat since the last one
        assert w.arbiter._timeout() == pytest.approx(
            silence - SAMPLE_S + HEARTBEAT_SLACK_S
        )  # before a sample
        w.clock.advance(w.arbiter._timeout())
        w.step()
        assert {s.state for s in w.arbiter.pool.slots[:2]} == {SlotState.STOPPING}  # judged hung on time
    finally:
        w.close()


# --- the supervisor's own life cycle and the command table (issue 10 item 3) -------------------------


def gigachat_pro(world: World) -> Settings:
    """A worker-visible change: a reload replaces the workers one at a time."""
    return dataclasses.replace(world.settings, gigachat_model="GigaChat-Pro")


def test_the_life_cycle_is_shown_and_only_legal_moves_are_made(world: World) -> None:
    info = world.arbiter.status()["supervisor"]
    assert (info["stopping"], info["rolling_restart"]) == (None, False)
    world.next_settings = gigachat_pro(world)
    world.arbiter.reload("SIGHUP")
    assert world.arbiter.status()["supervisor"]["rolling_restart"] is True
    world.arbiter.stop(fast=True, why="SIGQUIT")
    info = world.arbiter.status()["supervisor"]
    assert (info["stopping"], info["rolling_restart"]) == ("fast stop", False)
    with pytest.raises(IllegalTransitionError):
        Life().move(LifeState.STARTING)  # no way back to the start


def test_a_stop_during_a_rolling_restart_ends_it_without_ready(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.next_settings = gigachat_pro(world)
    world.arbiter.reload("SIGHUP")
    world.step()  # the first worker drains for the new config
    world.arbiter.stop(fast=False, why="SIGTERM")
    sent_before = len(world.notifier.sent)
    world.step()
    assert "READY=1" not in world.notifier.sent[sent_before:]
    assert not any("Rolling restart finished" in r.getMessage() for r in caplog.records)


def test_a_reload_while_stopping_is_refused(world: World) -> None:
    world.arbiter.stop(fast=False, why="SIGTERM")
    world.next_settings = gigachat_pro(world)
    assert world.arbiter.reload("SIGHUP") == {"ok": False, "error": "the supervisor is stopping"}
    assert world.arbiter.settings is world.settings


def test_every_protocol_command_has_an_entry_and_an_unknown_one_gets_an_error_reply(world: World) -> None:
    assert set(world.arbiter._commands) == set(COMMANDS)
    reply = world.arbiter.handle_request(Request(cmd="explode"))
    assert reply["ok"] is False and reply["error"].startswith("unknown cmd 'explode'")
    assert world.arbiter.handle_request(Request(cmd="scale"))["ok"] is False  # no n: never a resume
    assert world.arbiter.handle_request(Request(cmd="drain"))["intake_paused"] is True


def test_a_wait_that_only_answered_a_status_request_skips_the_steps(world: World) -> None:
    """The steps run after a signal, a command that acts, or a due time; never for a read-only request."""
    world.arbiter._server.open()
    try:
        for cmd, acts in (("status", False), ("health", False), ("drain", True)):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(world.settings.supervisor_socket))
            client.sendall(encode_request(cmd))
            client.settimeout(0.0)
            woken = []
            reply = b""
            while not reply.endswith(b"\n"):
                woken.append(world.arbiter.wait_for_events())
                with contextlib.suppress(BlockingIOError):
                    reply += client.recv(1 << 20)
            client.close()
            assert json.loads(reply)["ok"] is True
            assert any(woken) is acts, (cmd, woken)
        world.clock.advance(world.arbiter._timeout())
        assert world.arbiter.wait_for_events() is True  # the next sample is due
    finally:
        world.arbiter._server.close()
