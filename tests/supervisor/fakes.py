"""Fakes for the supervisor's seams: a clock that moves only when told, processes that only record."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from llm_service.config import Settings, load_settings
from supervisor.limits import HostReading, ProcReading
from supervisor.spawn import SpawnRequest


def settings(**overrides: object) -> Settings:
    env = {k.upper(): str(v) for k, v in overrides.items()}
    env.setdefault("SUPERVISOR_SOCKET", "/nonexistent/llm-test.sock")
    return load_settings(environ=env, env_file=None)


@dataclass
class FakeClock:
    now: float = 1000.0
    wall_now: float = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall_now += seconds


@dataclass
class FakeOps:
    """Records spawns and signals; exits happen when the test says so."""

    next_pid: int = 100
    spawned: list[tuple[int, SpawnRequest]] = field(default_factory=list)
    signals: list[tuple[int, int]] = field(default_factory=list)
    exited: list[tuple[int, int]] = field(default_factory=list)
    alive: set[int] = field(default_factory=set)
    fail_spawn: bool = False

    def spawn(self, request: SpawnRequest, *, in_child: Callable[[], None]) -> int:
        if self.fail_spawn:
            raise OSError(11, "Resource temporarily unavailable")
        self.next_pid += 1
        self.spawned.append((self.next_pid, request))
        self.alive.add(self.next_pid)
        return self.next_pid

    def kill(self, pid: int, sig: int) -> bool:
        self.signals.append((pid, sig))
        return pid in self.alive

    def reap(self) -> list[tuple[int, int]]:
        found, self.exited = self.exited, []
        return found

    def exit(self, pid: int, *, code: int | None = 0, sig: int | None = None) -> tuple[int, int]:
        """Make ``pid`` exit; returns (pid, wait status) as waitpid would."""
        self.alive.discard(pid)
        status = (sig & 0x7F) if sig is not None else ((code or 0) & 0xFF) << 8
        self.exited.append((pid, status))
        return pid, status

    def sent(self, pid: int) -> list[str]:
        return [signal.Signals(s).name for p, s in self.signals if p == pid]


@dataclass
class FakeMeter:
    host_reading: HostReading = field(
        default_factory=lambda: HostReading(cpu_percent=10.0, ram_percent=20.0, disk_free_mb=50_000.0)
    )
    procs: dict[int, ProcReading] = field(default_factory=dict)

    def host(self, pids: list[int]) -> HostReading:
        return self.host_reading

    def process(self, pid: int) -> ProcReading | None:
        return self.procs.get(pid)

    def forget(self, pid: int) -> None:
        self.procs.pop(pid, None)


def wait_status(*, code: int | None = 0, sig: int | None = None) -> int:
    status = (sig & 0x7F) if sig is not None else ((code or 0) & 0xFF) << 8
    assert os.WIFSIGNALED(status) == (sig is not None)
    return status
