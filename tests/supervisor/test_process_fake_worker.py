"""A real ``llm-supervisor`` forking real processes that run the fake worker (no Kafka needed).

What these show: replacement after kill -9 within a second, a frozen worker killed and replaced, RSS
recycling without failed tasks, the two-step stop, reload with a broken .env, llmctl's exit codes and
the systemd notify sequence.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llm_service import exit_codes
from tests.supervisor.harness import Supervisor
from tests.waiting import wait_until

Start = Callable[..., Supervisor]


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "MINIO_", "GIGACHAT_", "WORKER_"))
    }
    env.update(
        {
            "WORKER_PROCESSES": "2",
            "WORKER_HEARTBEAT_TIMEOUT": "30",
            "WORKER_DRAIN_TIMEOUT": "10",
            "WORKER_KILL_GRACE_S": "1",
            "SUPERVISOR_STOP_MARGIN_S": "2",
            "FAKE_TASK_MS": "300",
            "RUNTIME_DIRECTORY": str(tmp_path),
            "LIMIT_DISK_FREE_MB": "1",
        }
    )
    env.pop("NOTIFY_SOCKET", None)
    return env


@pytest.fixture
def start(tmp_path: Path, base_env: dict[str, str]) -> Iterator[Start]:
    started: list[Supervisor] = []

    def run(env_text: str | None = None, **env: str) -> Supervisor:
        sup = Supervisor(
            env={**base_env, **env}, tmp_path=tmp_path, env_text=env_text, name=f"sup{len(started)}"
        )
        started.append(sup)
        return sup

    yield run
    for sup in started:
        sup.stop()


def test_kill_9_is_replaced_within_a_second(start: Start) -> None:
    sup = start()
    before = sup.running(2)
    victim = before[1]["pid"]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    row = wait_until(
        lambda: next((w for w in sup.workers() if w["slot"] == 1 and w["pid"] not in (victim, None)), None),
        timeout=1.0,
        what="a new pid in slot 1",
    )
    assert time.monotonic() - killed_at < 1.0
    assert row["restarts"] == 1 and row["group_instance_id"] == before[1]["group_instance_id"]
    sup.running(2)
    assert "killed by SIGKILL" in sup.log_text() and "task(s) in flight" in sup.log_text()


def test_a_frozen_worker_is_killed_and_replaced(start: Start) -> None:
    sup = start(WORKER_HEARTBEAT_TIMEOUT="1.5")
    frozen = sup.running(2)[0]["pid"]
    os.kill(frozen, signal.SIGSTOP)
    wait_until(
        lambda: any(w["slot"] == 0 and w["pid"] != frozen and w["state"] == "RUNNING" for w in sup.workers()),
        timeout=10,
        what="slot 0 replaced",
    )
    assert "sent no heartbeat" in sup.log_text()
    with pytest.raises(ProcessLookupError):
        os.kill(frozen, 0)


def test_rss_soft_limit_recycles_without_failed_tasks(start: Start) -> None:
    sup = start(
        WORKER_PROCESSES="1", FAKE_WORKER_MODE="hog", WORKER_RSS_SOFT_MB="80", WORKER_RSS_HARD_MB="4000"
    )
    first = sup.running(1)[0]["pid"]
    wait_until(lambda: "recycled: RSS" in sup.log_text(), timeout=20, what="an RSS recycle")
    wait_until(
        lambda: any(w["pid"] != first and w["state"] == "RUNNING" for w in sup.workers()),
        timeout=10,
        what="the replacement",
    )
    assert "exited after recycle (exit code 0" in sup.log_text()
    assert all(w["failed"] == 0 for w in sup.workers())


def test_sigterm_drains_and_exits_0_within_the_deadline(start: Start) -> None:
    sup = start(FAKE_TASK_MS="1500")
    sup.running(2)
    wait_until(lambda: all(w["in_flight"] > 0 for w in sup.workers()), timeout=60, what="tasks in flight")
    began = time.monotonic()
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(timeout=15) == 0
    assert time.monotonic() - began < 10 + 2
    log = sup.log_text()
    assert "graceful stop (step 1 of 2)" in log and log.count("exited after shutdown (exit code 0") == 2


def test_second_sigterm_forces(start: Start) -> None:
    sup = start(FAKE_TASK_MS="60000")
    sup.running(2)
    wait_until(lambda: all(w["in_flight"] > 0 for w in sup.workers()), timeout=60, what="tasks in flight")
    sup.signal(signal.SIGTERM)
    wait_until(lambda: "step 1 of 2" in sup.log_text(), timeout=60, what="step 1")
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(timeout=5) == 1
    assert "forcing the stop (step 2 of 2)" in sup.log_text()


def test_broken_env_on_sighup_keeps_the_old_config(start: Start) -> None:
    sup = start(env_text="WORKER_MAX_CONCURRENT_TASKS=4\n")
    pids = {w["pid"] for w in sup.running(2)}
    sup.rewrite_env("WORKER_MAX_CONCURRENT_TASKS=lots\n")
    sup.signal(signal.SIGHUP)
    wait_until(lambda: "rejected" in sup.log_text(), timeout=60, what="the reload's verdict")
    lines = [line for line in sup.log_text().splitlines() if "Reload" in line]
    assert len(lines) == 1
    assert "keeping the old config: WORKER_MAX_CONCURRENT_TASKS='lots': must be a whole number" in lines[0]
    reply = sup.ask("status")
    assert (
        reply["config"]["WORKER_MAX_CONCURRENT_TASKS"] == 4 and {w["pid"] for w in reply["workers"]} == pids
    )


def test_good_sighup_replaces_workers_one_at_a_time(start: Start) -> None:
    sup = start(env_text="WORKER_MAX_CONCURRENT_TASKS=4\n")
    old = {w["pid"] for w in sup.running(2)}
    sup.rewrite_env("WORKER_MAX_CONCURRENT_TASKS=6\n")
    sup.signal(signal.SIGHUP)
    most_out = 0

    def replaced() -> bool:
        nonlocal most_out
        rows = sup.workers()
        most_out = max(most_out, sum(w["state"] != "RUNNING" for w in rows))
        return len(rows) == 2 and all(w["state"] == "RUNNING" and w["pid"] not in old for w in rows)

    wait_until(replaced, timeout=20, what="both workers replaced")
    assert most_out <= 1
    assert all(w["failed"] == 0 and w["capacity"] == 6 for w in sup.workers())
    assert "Rolling restart finished" in sup.log_text()


def test_llmctl_status_health_scale_drain(start: Start) -> None:
    sup = start()
    sup.running(2)
    status = sup.llmctl("status", "--json")
    assert status.returncode == 0 and '"heartbeat_age_s"' in status.stdout
    health = sup.llmctl("health")
    assert (health.returncode, health.stdout.strip()) == (0, "ok")
    table = sup.llmctl("status", "--table")  # stdout is a pipe here: the table only because asked
    assert table.returncode == 0 and table.stdout.startswith("health: ok") and "HEARTBEAT_S" in table.stdout
    scaled = sup.llmctl("scale", "3")
    assert (scaled.returncode, scaled.stdout) == (0, "scaled: 3 workers wanted\n")
    sup.running(3)
    drained = sup.llmctl("drain")
    assert (drained.returncode, drained.stdout) == (0, "intake paused: no new tasks taken\n")
    wait_until(lambda: sup.llmctl("health").returncode == 1, timeout=60, what="health degraded")
    assert all(w["control"]["intake_paused"] for w in sup.workers())
    resumed = sup.llmctl("resume", "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout) == {"ok": True, "intake_paused": False}
    wait_until(lambda: sup.llmctl("health").returncode == 0, timeout=60, what="health ok")
    refused = sup.llmctl("scale", "99")
    assert refused.returncode == 1 and refused.stdout.startswith("scale refused: ")
    reloaded = sup.llmctl("reload")
    assert (reloaded.returncode, reloaded.stdout) == (0, "reloaded: no setting changed\n")


def test_llmctl_health_failing_and_unreachable(start: Start, tmp_path: Path) -> None:
    sup = start(
        WORKER_PROCESSES="1",
        FAKE_WORKER_MODE="boot_fail",
        WORKER_RESTART_BACKOFF_S="0.05",
        WORKER_MAX_QUICK_FAILURES="3",
    )
    wait_until(lambda: sup.llmctl("health").returncode == 2, timeout=60, what="health failing")
    out = sup.llmctl("health").stdout
    assert out.startswith("failing") and "worker_fatal" in out and "bootstrap_failing" in out
    gone = subprocess.run(
        ["llmctl", "health", "--socket", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert gone.returncode == 2 and gone.stdout.startswith("failing")


def test_notify_socket_gets_ready_reloading_stopping_in_order(start: Start, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(10)
    sup = start(NOTIFY_SOCKET=path)
    sup.running(2)
    sup.signal(signal.SIGHUP)
    wait_until(lambda: "Reload (SIGHUP) accepted" in sup.log_text(), timeout=60, what="reload")
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(timeout=15) == 0
    firsts = []
    listener.setblocking(False)
    while True:
        try:
            firsts.append(listener.recv(4096).decode().splitlines()[0])
        except BlockingIOError:
            break
    listener.close()
    key = [m for m in firsts if m in ("READY=1", "RELOADING=1", "STOPPING=1")]
    assert key == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]


def test_bad_config_at_start_is_one_line_and_exit_code_2(start: Start) -> None:
    sup = start(WORKER_PROCESSES="-1")
    assert sup.wait_exit(timeout=10) == exit_codes.CONFIG_ERROR
    assert (
        sup.log_text().strip()
        == "llm-supervisor: config error: WORKER_PROCESSES='-1': must be greater than 0"
    )


def test_orphans_are_reaped(start: Start, tmp_path: Path) -> None:
    """A worker's child outlives it: re-parented to the supervisor (subreaper or PID 1) and reaped."""
    orphan_file = tmp_path / "orphan.pid"
    sup = start(WORKER_PROCESSES="1", FAKE_WORKER_MODE="orphan", FAKE_ORPHAN_FILE=str(orphan_file))
    worker = sup.running(1)[0]["pid"]
    orphan = int(wait_until(orphan_file.read_text, timeout=60, what="the orphan's pid"))
    os.kill(worker, signal.SIGKILL)
    wait_until(
        lambda: f"Reaped orphan process {orphan}" in sup.log_text(), timeout=60, what="the orphan reaped"
    )
    assert not Path(f"/proc/{orphan}").exists()
