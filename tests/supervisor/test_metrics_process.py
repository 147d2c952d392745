"""``METRICS_PORT`` on a real ``llm-supervisor`` (fake workers): off by default; a taken port stops it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import requests

from llm_service import exit_codes
from llm_service.config import load_settings
from llm_service.errors import ConfigError
from tests.supervisor.harness import Supervisor


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "MINIO_", "GIGACHAT_", "WORKER_"))
    }
    env.pop("NOTIFY_SOCKET", None)
    env.update(WORKER_PROCESSES="1", RUNTIME_DIRECTORY=str(tmp_path), LIMIT_DISK_FREE_MB="1", **extra)
    return env


def test_a_port_outside_tcp_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"METRICS_PORT.*0-65535"):
        load_settings(environ={"METRICS_PORT": "70000"})


def test_a_taken_port_stops_start_up_with_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        sup = Supervisor(
            env=_env(tmp_path, METRICS_PORT=str(port), METRICS_ADDR="127.0.0.1"), tmp_path=tmp_path
        )
        try:
            assert sup.wait_exit(timeout=30) == exit_codes.CONFIG_ERROR
        finally:
            sup.stop()
    assert (
        f"Cannot start: METRICS_PORT={port}: cannot listen on 127.0.0.1: Address already in use"
        in sup.log_text()
    )


def test_off_by_default_and_served_when_set(tmp_path: Path) -> None:
    off = Supervisor(env=_env(tmp_path), tmp_path=tmp_path, name="off")
    try:
        off.running(1)
        assert "Metrics at" not in off.log_text()
    finally:
        off.stop()
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    on = Supervisor(
        env=_env(tmp_path, METRICS_PORT=str(port), METRICS_ADDR="127.0.0.1"), tmp_path=tmp_path, name="on"
    )
    try:
        on.running(1)
        assert f"Metrics at http://127.0.0.1:{port}/metrics" in on.log_text()
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'llm_service_workers{state="RUNNING"} 1.0' in text
    finally:
        on.stop()
