"""The service itself (``llm-supervisor`` and its workers) run in the background against the local stack.

Used by ``make run`` through ``llm-devstack service start|stop``. The GigaChat emulator is the model
backend unless a real ``GIGACHAT_AUTH_KEY`` is set in the environment, which switches to the real
service (its default URLs, or the ones given alongside the key).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.emulator import AUTH_KEY
from devstack.procs import ManagedProcess
from devstack.stack import Stack
from llm_service.errors import StackError
from llmctl.control import Unreachable, request

_GIGACHAT_VARS = ("GIGACHAT_AUTH_URL", "GIGACHAT_API_URL", "GIGACHAT_AUTH_KEY", "GIGACHAT_VERIFY_SSL")


def uses_real_gigachat(environ: Mapping[str, str]) -> bool:
    key = environ.get("GIGACHAT_AUTH_KEY", "")
    return bool(key) and key != AUTH_KEY


class LocalService:
    def __init__(self, *, stack: Stack, environ: Mapping[str, str] | None = None) -> None:
        self.stack = stack
        self.environ = dict(os.environ if environ is None else environ)
        self.proc = ManagedProcess("llm-supervisor", stack.state_dir)

    @property
    def socket_path(self) -> Path:
        return self.stack.state_dir / "llm-supervisor.sock"

    def env(self) -> dict[str, str]:
        """Variables that point the service (and llmctl) at the stack and at this supervisor."""
        env = self.stack.env()
        if uses_real_gigachat(self.environ):
            for name in _GIGACHAT_VARS:
                env.pop(name, None)
        env["SUPERVISOR_SOCKET"] = str(self.socket_path)
        return env

    def running(self) -> bool:
        return self.proc.process() is not None

    def start(self, *, timeout: float = 90.0) -> bool:
        """Start the supervisor unless it runs; wait until every worker reports RUNNING. False if it ran."""
        if self.running():
            return False
        if not self.stack.status()["any"]:
            raise StackError("the local stack is not running; run `llm-devstack up` first")
        self.proc.start(["llm-supervisor"], env={**self.environ, **self.env()}, cwd=self.stack.state_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            workers = status.get("workers", []) if status else []
            if workers and all(str(w.get("state", "")).upper() == "RUNNING" for w in workers):
                return True
            if not self.running():
                tail = self.proc.log_tail()
                raise StackError(f"llm-supervisor exited; last lines of {self.proc.log_file}:\n{tail}")
            time.sleep(0.3)
        raise StackError(f"workers not running after {timeout:.0f}s; see {self.proc.log_file}")

    def status(self) -> dict[str, Any] | None:
        """The supervisor's status reply, or None while its socket does not answer."""
        try:
            return request(str(self.socket_path), "status")
        except (Unreachable, ValueError):
            return None

    def stop(self) -> None:
        """SIGTERM: workers finish their tasks in flight and commit; killed only after the deadline."""
        self.proc.stop(timeout=180)
