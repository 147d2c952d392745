"""``llm-devstack up`` twice then ``down``: idempotent, and nothing is left running."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psutil

from devstack.procs import port_open
from devstack.stack import StackPorts


def _devstack(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["llm-devstack", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _stack_pids(state_dir: Path) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["pid"] for p in state_dir.glob("*.pid")}


def _processes_mentioning(state_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(state_dir) in cmdline:
            found.append(proc)
    return found


def test_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    ports = StackPorts.free()
    port_args = [
        "--kafka-port",
        str(ports.kafka),
        "--kafka-controller-port",
        str(ports.kafka_controller),
        "--s3-port",
        str(ports.s3),
        "--emulator-port",
        str(ports.emulator),
    ]
    state_dir = tmp_path / "state"
    try:
        first = _devstack(state_dir, "up", *port_args)
        assert first.returncode == 0, first.stderr
        assert "started kafka, s3, gigachat-emulator" in first.stdout
        pids = _stack_pids(state_dir)
        assert set(pids) == {"kafka", "s3", "gigachat-emulator"}

        second = _devstack(state_dir, "up", *port_args)
        assert second.returncode == 0, second.stderr
        assert "already running; nothing changed" in second.stdout
        assert _stack_pids(state_dir) == pids

        status = _devstack(state_dir, "status")
        assert status.returncode == 0 and status.stdout.count("running") == 3

        env = _devstack(state_dir, "env")
        assert f"export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{ports.kafka}" in env.stdout
        assert f"export MINIO_ENDPOINT=127.0.0.1:{ports.s3}" in env.stdout
    finally:
        down = _devstack(state_dir, "down")
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, name
    assert _processes_mentioning(state_dir) == []
    for port in (ports.kafka, ports.kafka_controller, ports.s3, ports.emulator):
        assert not port_open(port), f"port {port} still open"
    assert _devstack(state_dir, "status").returncode == 1
    assert os.listdir(state_dir)  # data stays for the next `up`
