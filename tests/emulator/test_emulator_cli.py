"""The command line and the process lifecycle: flags, ready file, listening line, signals, exit codes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.waiting import wait_until

from .conftest import REPO_ROOT, EmulatorProcess

CLI = [sys.executable, "-m", "gigachat_emulator"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--latency", "-1"], "--latency: must be >= 0"),
        (["--error-rate", "1.5"], "--error-rate: must be within [0, 1]"),
        (["--error-codes", "200"], "--error-codes: expected HTTP error codes"),
        (["--max-concurrency", "two"], "--max-concurrency: expected a number"),
        (["--port", "70000"], "--port: must be within 0..65535"),
        (["--scope", "GIGACHAT_API_X"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_help_lists_every_flag() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in (
        "--host", "--port", "--latency", "--latency-per-token", "--error-rate", "--error-codes",
        "--hang-rate", "--hang-cap", "--retry-after", "--fault-oauth", "--token-ttl", "--max-concurrency",
        "--auth-key", "--scope", "--ready-file", "--seed", "--call-log-size", "--log-level",
    ):  # fmt: skip
        assert flag in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_0(
    emulator_factory: Callable[..., EmulatorProcess], signum: signal.Signals
) -> None:
    emulator = emulator_factory()
    ready_files = list(Path(emulator.log_path).parent.glob("*.port"))
    assert len(ready_files) == 1
    emulator.process.send_signal(signum)
    assert emulator.process.wait(timeout=10) == 0
    output = emulator.log_path.read_text()
    assert f"GigaChat emulator listening on http://127.0.0.1:{emulator.port}\n" in output
    assert not ready_files[0].exists()


def test_busy_port_exits_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("--port", str(taken.getsockname()[1]), "--ready-file", str(tmp_path / "port"))
    assert result.returncode == 3
    assert "Cannot listen" in result.stderr
    assert not (tmp_path / "port").exists()


def test_shutdown_wakes_a_hung_call(emulator_factory: Callable[..., EmulatorProcess]) -> None:
    emulator = emulator_factory("--hang-rate", "1")
    headers = {"Authorization": f"Bearer {emulator.token()}"}
    body = {"model": "GigaChat", "messages": [{"role": "user", "content": "hi"}]}
    answers: list[int | str] = []

    def call() -> None:
        try:
            answers.append(
                requests.post(f"{emulator.api_url}/chat/completions", headers=headers, json=body).status_code
            )
        except requests.ConnectionError as exc:
            answers.append(type(exc).__name__)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: emulator.control("GET", "stats")["in_flight"] == 1, timeout=30, what="the hung call")
    started = time.monotonic()
    emulator.process.send_signal(signal.SIGTERM)
    assert emulator.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    caller.join(timeout=10)
    assert answers == [503]
