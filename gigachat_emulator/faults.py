"""Fault injection and limits: injected errors and hangs, the per-account concurrency limit, outages,
and interruptible sleeping.

None of these hold a lock while a request sleeps: locks guard counters and the PRNG only.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from gigachat_emulator.config import FaultConfig

_HANG_POLL_S = 0.2


class FaultKind(Enum):
    """What an injected fault does."""

    ERROR = "error"
    HANG = "hang"


@dataclass(frozen=True)
class Fault:
    """One decision to fail a call; ``status`` is set for errors."""

    kind: FaultKind
    status: int = 0


class FaultInjector:
    """Decides per call whether to inject an error or a hang.

    Decisions come from a PRNG seeded with ``seed``, so a serial sequence of calls is reproducible;
    error codes rotate through ``error_codes`` in order.
    """

    def __init__(self, *, seed: int) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._next_code = 0

    def decide(self, config: FaultConfig) -> Fault | None:
        """Return the fault for this call, or ``None``."""
        if config.error_rate <= 0 and config.hang_rate <= 0:
            return None
        with self._lock:
            error_roll, hang_roll = self._random.random(), self._random.random()
            if error_roll < config.error_rate:
                code = config.error_codes[self._next_code % len(config.error_codes)]
                self._next_code += 1
                return Fault(FaultKind.ERROR, code)
        if hang_roll < config.hang_rate:
            return Fault(FaultKind.HANG)
        return None

    def reset(self) -> None:
        """Restart the decision sequence from the seed."""
        with self._lock:
            self._random = random.Random(self._seed)
            self._next_code = 0


class ConcurrencyLimiter:
    """Counts in-flight calls per account; ``try_acquire`` fails when the account is at its limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}

    def try_acquire(self, account: str, limit: int) -> bool:
        """Take a slot unless ``limit`` (> 0) slots are taken; ``limit`` 0 means unlimited."""
        with self._lock:
            current = self._in_flight.get(account, 0)
            if 0 < limit <= current:
                return False
            self._in_flight[account] = current + 1
            return True

    def release(self, account: str) -> None:
        """Give a slot back; must follow exactly one successful ``try_acquire``."""
        with self._lock:
            remaining = self._in_flight.get(account, 0) - 1
            if remaining > 0:
                self._in_flight[account] = remaining
            else:
                self._in_flight.pop(account, None)

    def in_flight(self) -> dict[str, int]:
        """Return the in-flight count per account."""
        with self._lock:
            return dict(self._in_flight)


class OutageMode(Enum):
    """How API and OAuth calls fail during an outage."""

    HTTP_503 = "503"
    RESET = "reset"


class OutageWindow:
    """An outage lasting until a deadline on the wall clock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._mode = OutageMode.HTTP_503

    def start(self, *, now: float, seconds: float, mode: OutageMode) -> float:
        """Begin (or replace) an outage of ``seconds`` from ``now``; 0 ends it. Returns the end time."""
        with self._lock:
            self._until = now + seconds
            self._mode = mode
            return self._until

    def current(self, now: float) -> OutageMode | None:
        """Return the mode when an outage is in force at ``now``, else ``None``."""
        with self._lock:
            return self._mode if now < self._until else None

    def remaining(self, now: float) -> float:
        """Seconds left of the outage (0 when none)."""
        with self._lock:
            return max(0.0, self._until - now)


class Sleeper:
    """Sleeps that end early when the server is stopping."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping

    @property
    def stopping(self) -> bool:
        """Whether shutdown has begun."""
        return self._stopping.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; return ``False`` when interrupted by shutdown."""
        if seconds <= 0:
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)

    def sleep_until(self, deadline: float) -> bool:
        """Wait until ``time.monotonic()`` reaches ``deadline``; ``False`` when interrupted by shutdown."""
        return self.sleep(deadline - time.monotonic())

    def hang(self, cap_s: float, client_gone: Callable[[], bool]) -> str:
        """Wait until the client disconnects, shutdown or ``cap_s``; return ``gone``/``stopping``/``cap``."""
        waited = 0.0
        while waited < cap_s:
            step = min(_HANG_POLL_S, cap_s - waited)
            if self._stopping.wait(step):
                return "stopping"
            waited += step
            if client_gone():
                return "gone"
        return "cap"
