"""Restart policy: what to do with a slot whose process just exited (docs/architecture.md, "Conventions").

Pure logic, called by the supervisor's main loop after a reap. "Could not boot" (exit codes
BOOT_FAILED, CONFIG_ERROR, FENCED, or never reached RUNNING) and "died while running too soon" count
as quick failures; a process that ran for WORKER_MIN_UPTIME_S resets the count. The first quick
failure restarts at once, later ones wait ``base * 2**(n-2)`` seconds with +-25 % jitter, capped
(llm_service/backoff.py);
after WORKER_MAX_QUICK_FAILURES in a row the slot goes FATAL until the cool-off ends.
"""

from __future__ import annotations

import enum
import os
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass

from llm_service import exit_codes
from llm_service.backoff import Jitter, compute_backoff

_BOOT_CODES = {
    exit_codes.BOOT_FAILED: "could not boot",
    exit_codes.CONFIG_ERROR: "config rejected",
    exit_codes.FENCED: "fenced by the broker",
}


class Verdict(enum.Enum):
    RESTART = "restart"
    BACKOFF = "backoff"
    FATAL = "fatal"


@dataclass(frozen=True, kw_only=True)
class ExitInfo:
    """What a wait status says about how a worker ended."""

    code: int | None  # exit code, or None when killed by a signal
    signal: int | None
    boot_failure: bool  # the worker says it could not boot (or its config was rejected)
    config_error: bool

    @classmethod
    def from_status(cls, status: int) -> ExitInfo:
        if os.WIFSIGNALED(status):
            return cls(code=None, signal=os.WTERMSIG(status), boot_failure=False, config_error=False)
        code = os.waitstatus_to_exitcode(status)
        return cls(
            code=code,
            signal=None,
            boot_failure=code in _BOOT_CODES,
            config_error=code == exit_codes.CONFIG_ERROR,
        )

    @property
    def fenced(self) -> bool:
        """The broker gave this slot's group_instance_id to another process (exit code FENCED)."""
        return self.code == exit_codes.FENCED

    @property
    def clean(self) -> bool:
        return self.code == exit_codes.OK

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {signal.Signals(self.signal).name}"
        if self.code in _BOOT_CODES:
            return f"exit code {self.code} ({_BOOT_CODES[self.code]})"
        return f"exit code {self.code}" + (" (crashed)" if self.code == exit_codes.CRASHED else "")


@dataclass(frozen=True, kw_only=True)
class Decision:
    verdict: Verdict
    delay: float  # seconds until the next start (BACKOFF, FATAL)
    quick_failures: int  # the slot's new count


@dataclass(frozen=True, kw_only=True)
class BackoffPolicy:
    base_s: float
    max_s: float
    max_quick_failures: int
    min_uptime_s: float
    cooloff_s: float
    rand: Callable[[], float] = random.random  # [0, 1); injected so tests are deterministic

    def decide(
        self, *, info: ExitInfo, uptime: float, reached_running: bool, quick_failures: int
    ) -> Decision:
        """Decide about an exit the supervisor did not ask for."""
        if info.config_error:
            return Decision(verdict=Verdict.FATAL, delay=self.cooloff_s, quick_failures=quick_failures + 1)
        quick = info.boot_failure or not reached_running or uptime < self.min_uptime_s
        if info.clean and reached_running:
            quick = uptime < self.min_uptime_s
        if not quick:
            return Decision(verdict=Verdict.RESTART, delay=0.0, quick_failures=0)
        count = quick_failures + 1
        if count >= self.max_quick_failures:
            return Decision(verdict=Verdict.FATAL, delay=self.cooloff_s, quick_failures=count)
        if count == 1:
            return Decision(verdict=Verdict.RESTART, delay=0.0, quick_failures=count)
        return Decision(verdict=Verdict.BACKOFF, delay=self.delay(count), quick_failures=count)

    def delay(self, count: int) -> float:
        """The pause after the ``count``-th quick failure (2 or more: the first restarts at once)."""
        return compute_backoff(
            count - 1, base_s=self.base_s, max_s=self.max_s, jitter=Jitter.SPREAD, rand=self.rand
        )
