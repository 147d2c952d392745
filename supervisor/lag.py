"""Consumer time lag, measured by a periodic helper process (:mod:`supervisor.lag_probe`).

Runs in the supervisor process. The probe is a separate process, not a thread, because the
supervisor may fork a worker at any moment and a fork with a thread running is unsafe. Its stdout is
read from the main selector loop; its exit is reaped by the main loop's ``waitpid(-1)`` and handed
here through :meth:`LagMonitor.on_exit`. A probe that overruns its timeout is killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
from typing import IO

from llm_service.config import Settings

log = logging.getLogger(__name__)


class LagMonitor:
    """Starts a probe every ``SUPERVISOR_LAG_INTERVAL_S`` and keeps the last good answer."""

    def __init__(self, *, selector: selectors.BaseSelector, timeout_s: float = 20.0) -> None:
        self._selector = selector
        self._timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = bytearray()
        self._started = 0.0
        self._killed = False  # the running probe overran and was sent SIGKILL; its reaping is awaited
        self._next = 0.0
        self.lag_s: float | None = None
        self.lag_messages: int | None = None
        self.error = ""

    def tick(self, settings: Settings, now: float) -> None:
        """Start a probe when one is due; kill one that overran. Called every loop turn."""
        if self._proc is not None:
            if now - self._started > self._timeout_s and not self._killed:
                log.warning("Consumer-lag probe overran %.0f s; killing it", self._timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._proc.pid, signal.SIGKILL)
                self._killed = True
            return
        if settings.supervisor_lag_interval_s <= 0 or now < self._next:
            return
        self._next = now + settings.supervisor_lag_interval_s
        self._start(settings, now)

    def next_due(self, settings: Settings) -> float | None:
        """When :meth:`tick` has something to do: a probe to start, or a running one's overrun deadline."""
        if self._proc is not None:  # once killed, its SIGCHLD wakes the loop: nothing is due until then
            return None if self._killed else self._started + self._timeout_s
        return self._next if settings.supervisor_lag_interval_s > 0 else None

    def _start(self, settings: Settings, now: float) -> None:
        args = [sys.executable, "-m", "supervisor.lag_probe", "--timeout", str(self._timeout_s / 2)]
        # The settings go through the environment (not argv, which `ps` shows): SASL password included.
        env = {**os.environ, **settings.as_environ()}
        try:
            self._proc = subprocess.Popen(
                args,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as exc:
            log.warning("Cannot start the consumer-lag probe: %s", exc)
            return
        self._started = now
        self._killed = False
        self._out.clear()
        stdout: IO[bytes] | None = self._proc.stdout
        if stdout is not None:
            os.set_blocking(stdout.fileno(), False)
            self._selector.register(stdout, selectors.EVENT_READ, self._read)

    def _read(self, mask: int) -> None:
        """Selector callback: take what the probe wrote; parse its answer at EOF."""
        while self._proc is not None and self._proc.stdout is not None and not self._proc.stdout.closed:
            try:
                chunk = os.read(self._proc.stdout.fileno(), 65536)
            except BlockingIOError:
                return
            if not chunk:
                self._close_pipe()
                self._parse(bytes(self._out))
                return
            self._out += chunk

    def _parse(self, out: bytes) -> None:
        try:
            result = json.loads(out or b"{}")
        except json.JSONDecodeError:
            result = {"error": "unreadable probe output"}
        if "error" in result or "lag_s" not in result:
            self.error = str(result.get("error", "no answer"))
            log.debug("Consumer-lag probe failed: %s", self.error)
            return
        self.error = ""
        self.lag_s = None if result["lag_s"] is None else float(result["lag_s"])
        self.lag_messages = int(result.get("lag_messages") or 0)

    def owns(self, pid: int) -> bool:
        return self._proc is not None and self._proc.pid == pid

    def on_exit(self, pid: int, status: int) -> None:
        """The main loop reaped the probe; record it so Popen never waits for it itself."""
        if self._proc is None or self._proc.pid != pid:
            return
        self._proc.returncode = os.waitstatus_to_exitcode(status)
        self._read(selectors.EVENT_READ)  # take what is left; EOF parses and closes it
        self._close_pipe()
        self._proc = None

    def _close_pipe(self) -> None:
        if self._proc is not None and self._proc.stdout is not None and not self._proc.stdout.closed:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._proc.stdout)
            self._proc.stdout.close()

    def close_in_child(self) -> None:
        """In a freshly forked worker: drop the inherited pipe, leave the probe alone."""
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()

    def close(self) -> None:
        """At supervisor exit: stop a probe still running."""
        if self._proc is not None:
            self._close_pipe()
            if self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.returncode = -signal.SIGKILL  # reaped by the loop's waitpid(-1), or by init
