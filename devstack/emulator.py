"""The GigaChat API emulator, run as a stack process on 127.0.0.1."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import requests

from devstack.procs import ManagedProcess, port_open, wait_until
from llm_service.errors import StackError

# The authorization key the local emulator accepts; it grants nothing anywhere else.
AUTH_KEY = base64.b64encode(b"llm-dev-client:llm-dev-secret").decode()


class Emulator:
    def __init__(self, *, run_dir: Path, port: int, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port
        self.extra_args = extra_args
        self.proc = ManagedProcess("gigachat-emulator", run_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc.process() is not None

    def start(self, *, timeout: float = 30.0) -> None:
        if port_open(self.port):
            raise StackError(f"port {self.port} (GigaChat emulator) is already in use by another process")
        self.proc.start(
            [
                sys.executable,
                "-m",
                "gigachat_emulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--auth-key",
                AUTH_KEY,
                *self.extra_args,
            ]
        )
        wait_until(self.healthy, proc=self.proc, timeout=timeout, what="GigaChat emulator")

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/_emulator/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        self.proc.stop(timeout=10)
