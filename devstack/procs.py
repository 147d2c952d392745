"""Start, find and stop the stack's background processes, each in its own session.

A pid file holds the pid and the process's start time: a pid alone could, after a reboot or a long
pause, name an unrelated process, and ``down`` must never kill one of those.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from llm_service.errors import StackError


@dataclass(frozen=True)
class ManagedProcess:
    """One process of the stack; its pid file and log live in ``run_dir``."""

    name: str
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def process(self) -> psutil.Process | None:
        """The live process this pid file names, or None (no file, gone, zombie or pid reused)."""
        try:
            record = json.loads(self.pid_file.read_text())
            proc = psutil.Process(record["pid"])
            if abs(proc.create_time() - record["started"]) > 1 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (OSError, ValueError, KeyError, psutil.Error):
            return None
        return proc

    def start(self, argv: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            child = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        started = psutil.Process(child.pid).create_time()
        self.pid_file.write_text(json.dumps({"pid": child.pid, "started": started, "argv": argv}))
        return child.pid

    def stop(self, *, timeout: float = 30.0) -> None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL it. No orphan is left."""
        proc = self.process()
        if proc is not None:
            group = _members(proc)
            _signal_group(proc.pid, signal.SIGTERM)
            _, alive = psutil.wait_procs(group, timeout=timeout)
            if alive:
                _signal_group(proc.pid, signal.SIGKILL)
                for p in alive:
                    _kill(p)
                psutil.wait_procs(alive, timeout=5)
            _reap(proc.pid)
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _members(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _kill(proc: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        proc.kill()


def _reap(pid: int) -> None:
    """Collect the exit status when the process was our own child (test fixtures), so no zombie stays."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    ready: Callable[[], bool], *, proc: ManagedProcess, timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll ``ready`` until it holds; fail early with the log tail if the process died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.process() is None:
            raise StackError(
                f"{what} exited during start-up; last lines of {proc.log_file}:\n{proc.log_tail()}"
            )
        time.sleep(interval)
    raise StackError(
        f"{what} did not become ready in {timeout:.0f}s; last lines of {proc.log_file}:\n{proc.log_tail()}"
    )
