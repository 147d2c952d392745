"""Fixtures that run the GigaChat emulator as a real subprocess on a free loopback port.

Every process is started in its own session and stopped in teardown: SIGTERM to the process group, then
SIGKILL if it has not exited by the deadline. Waiting is always polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from gigachat_emulator.auth import DEFAULT_AUTH_KEY
from gigachat_emulator.config import FaultConfig
from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


@dataclass
class EmulatorProcess:
    """A running emulator subprocess and helpers to talk to it."""

    process: subprocess.Popen[bytes]
    port: int
    auth_key: str
    log_path: Path
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v1"

    @property
    def auth_url(self) -> str:
        return f"{self.base_url}/api/v2/oauth"

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``/_emulator/<path>`` and return the decoded JSON (fails the test on a non-200)."""
        response = self.session.request(method, f"{self.base_url}/_emulator/{path}", timeout=10, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def configure(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "config", json=changes)
        return result

    def calls(self, **filters: str) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", "calls", params=filters)
        return result

    def oauth(
        self, *, key: str | None = None, scope: str = "GIGACHAT_API_PERS", **headers: str
    ) -> requests.Response:
        """Raw OAuth request; ``RqUID`` is a fresh uuid unless given in ``headers``."""
        sent = {"Authorization": f"Basic {key or self.auth_key}", "RqUID": str(uuid.uuid4()), **headers}
        return self.session.post(self.auth_url, headers=sent, data={"scope": scope}, timeout=10)

    def token(self) -> str:
        response = self.oauth()
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def stop(self) -> int:
        """SIGTERM the process group, SIGKILL after the deadline; return the exit code."""
        self.session.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=STOP_TIMEOUT_S)


def start_emulator(tmp_dir: Path, *args: str, auth_key: str = DEFAULT_AUTH_KEY) -> EmulatorProcess:
    """Start ``python -m gigachat_emulator --port 0`` and wait until it answers its health check."""
    ready = tmp_dir / f"emulator-{uuid.uuid4().hex}.port"
    log_path = ready.with_suffix(".log")
    command = [sys.executable, "-m", "gigachat_emulator", "--port", "0", "--ready-file", str(ready)]
    command += ["--auth-key", auth_key, *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def ready_or_dead() -> bool:
        return ready.exists() or process.poll() is not None

    wait_until(ready_or_dead, timeout=START_TIMEOUT_S, what="the emulator's ready file")
    if process.poll() is not None:
        pytest.fail(f"emulator exited with {process.returncode}: {log_path.read_text()}")
    emulator = EmulatorProcess(process, int(ready.read_text()), auth_key, log_path)

    def healthy() -> bool:
        try:
            return requests.get(f"{emulator.base_url}/_emulator/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(healthy, timeout=START_TIMEOUT_S, what="/_emulator/health")
    return emulator


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., EmulatorProcess]]:
    """Start emulators with extra CLI flags; all are stopped (TERM, then KILL) in teardown."""
    started: list[EmulatorProcess] = []

    def factory(*args: str, auth_key: str = DEFAULT_AUTH_KEY) -> EmulatorProcess:
        emulator = start_emulator(tmp_path, *args, auth_key=auth_key)
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        emulator.stop()


@pytest.fixture(scope="session")
def shared_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One emulator for the tests that only need default flags (reset before each use)."""
    emulator = start_emulator(tmp_path_factory.mktemp("emulator"))
    yield emulator
    emulator.stop()


@pytest.fixture
def emulator(shared_emulator: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The shared emulator, with log, tokens, files and outage cleared and the default config restored."""
    defaults = FaultConfig().to_json()
    shared_emulator.configure(**defaults)
    shared_emulator.control("POST", "reset")
    yield shared_emulator
    shared_emulator.configure(**defaults)
