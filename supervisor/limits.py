"""Resource limits: measure over a window, then decide (the runbook's CPU/RAM < 80 %, disk > 1 GB).

Runs in the supervisor process. Measuring sits behind the :class:`Meter` seam (:class:`PsutilMeter`
in production, a fake in tests); :class:`LoadTracker` keeps the readings of the last LIMIT_WINDOW_S
seconds; :func:`decide_pool` and :func:`decide_worker` are pure functions of the averages and the
settings, so every decision is unit-tested with made-up readings.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Protocol

import psutil

from llm_service.config import Settings

log = logging.getLogger(__name__)

_MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class HostReading:
    cpu_percent: float
    ram_percent: float
    disk_free_mb: float


@dataclass(frozen=True, kw_only=True)
class ProcReading:
    cpu_percent: float
    rss_mb: float


class Meter(Protocol):
    def host(self) -> HostReading:
        """CPU since the previous call, RAM now, and the least free space of the work and temp dirs."""
        ...

    def process(self, pid: int) -> ProcReading | None:
        """CPU since the previous call for this pid, and RSS now; None when the process is gone."""
        ...

    def forget(self, pid: int) -> None: ...


class PsutilMeter:
    """psutil readings. ``cpu_percent`` with no interval never blocks: it compares with the last call."""

    def __init__(self, *, paths: tuple[str, ...] | None = None) -> None:
        self._paths = paths if paths is not None else (os.getcwd(), tempfile.gettempdir())
        self._procs: dict[int, psutil.Process] = {}
        psutil.cpu_percent(interval=None)  # prime: the first call has nothing to compare with

    def host(self) -> HostReading:
        free = min(psutil.disk_usage(p).free for p in self._paths)
        return HostReading(
            cpu_percent=psutil.cpu_percent(interval=None),
            ram_percent=psutil.virtual_memory().percent,
            disk_free_mb=free / _MIB,
        )

    def process(self, pid: int) -> ProcReading | None:
        try:
            proc = self._procs.get(pid)
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
                proc.cpu_percent(interval=None)
            return ProcReading(
                cpu_percent=proc.cpu_percent(interval=None), rss_mb=proc.memory_info().rss / _MIB
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._procs.pop(pid, None)
            return None

    def forget(self, pid: int) -> None:
        self._procs.pop(pid, None)


class Window:
    """Values of the last ``span`` seconds and their average."""

    def __init__(self, span: float) -> None:
        self.span = span
        self._items: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, now: float, value: float) -> None:
        self._items.append((now, value))
        while self._items and self._items[0][0] < now - self.span:
            self._items.popleft()

    def covered(self) -> float:
        """Seconds between the oldest and newest value held."""
        return self._items[-1][0] - self._items[0][0] if self._items else 0.0

    def average(self) -> float:
        return sum(v for _, v in self._items) / len(self._items) if self._items else 0.0


class LoadTracker:
    """Windowed averages for the host and each worker pid; the supervisor loop samples about once a second."""

    def __init__(self, *, meter: Meter, window_s: float) -> None:
        self._meter = meter
        self._window_s = window_s
        self._cpu = Window(window_s)
        self._ram = Window(window_s)
        self._disk_free_mb = float("inf")
        self._proc_cpu: dict[int, Window] = {}
        self._proc_rss: dict[int, float] = {}

    def set_window(self, window_s: float) -> None:
        self._window_s = self._cpu.span = self._ram.span = window_s
        for window in self._proc_cpu.values():
            window.span = window_s

    def sample(self, now: float, pids: list[int]) -> None:
        host = self._meter.host()
        self._cpu.add(now, host.cpu_percent)
        self._ram.add(now, host.ram_percent)
        self._disk_free_mb = host.disk_free_mb
        for pid in pids:
            reading = self._meter.process(pid)
            if reading is None:
                continue
            self._proc_cpu.setdefault(pid, Window(self._window_s)).add(now, reading.cpu_percent)
            self._proc_rss[pid] = reading.rss_mb
        for gone in set(self._proc_cpu) - set(pids):
            self.forget(gone)

    def forget(self, pid: int) -> None:
        self._proc_cpu.pop(pid, None)
        self._proc_rss.pop(pid, None)
        self._meter.forget(pid)

    def warm(self) -> bool:
        """True once half the window holds readings: no shedding on the first noisy second."""
        return self._cpu.covered() >= self._cpu.span / 2

    def host(self) -> HostReading:
        return HostReading(
            cpu_percent=self._cpu.average(), ram_percent=self._ram.average(), disk_free_mb=self._disk_free_mb
        )

    def process(self, pid: int) -> ProcReading | None:
        if pid not in self._proc_rss:
            return None
        return ProcReading(cpu_percent=self._proc_cpu[pid].average(), rss_mb=self._proc_rss[pid])


class Shed(enum.IntEnum):
    """How hard the pool holds back: NONE, CAP (half concurrency), PAUSE (no new tasks)."""

    NONE = 0
    CAP = 1
    PAUSE = 2


@dataclass(frozen=True, kw_only=True)
class PoolLoad:
    shed: Shed
    disk_low: bool
    reason: str

    @property
    def intake_paused(self) -> bool:
        return self.disk_low or self.shed is Shed.PAUSE


def decide_pool(settings: Settings, host: HostReading) -> PoolLoad:
    """Above the norm: halve concurrency; above the alert level: pause intake; low disk: pause intake.

    The averages cover LIMIT_WINDOW_S, so one spike does not shed and one quiet second does not lift it.
    """
    disk_low = host.disk_free_mb < settings.limit_disk_free_mb
    over = []
    if host.cpu_percent > settings.limit_cpu_percent:
        over.append(f"CPU {host.cpu_percent:.0f}%")
    if host.ram_percent > settings.limit_ram_percent:
        over.append(f"RAM {host.ram_percent:.0f}%")
    shed = Shed.CAP if over else Shed.NONE
    if host.cpu_percent > settings.alert_cpu_percent or host.ram_percent > settings.alert_ram_percent:
        shed = Shed.PAUSE
    reasons = [*over, *([f"disk free {host.disk_free_mb:.0f} MiB"] if disk_low else [])]
    return PoolLoad(shed=shed, disk_low=disk_low, reason=", ".join(reasons))


def shed_cap(settings: Settings, shed: Shed) -> int:
    """The concurrency cap the control area carries for a shed level (0: no cap)."""
    return max(1, settings.worker_max_concurrent_tasks // 2) if shed >= Shed.CAP else 0


class WorkerAction(enum.Enum):
    NONE = "none"
    RECYCLE = "recycle"  # drain, exit, replace
    KILL = "kill"  # over the hard limit: no waiting


def decide_worker(
    settings: Settings, reading: ProcReading | None, *, tasks_done: int, max_tasks: int
) -> tuple[WorkerAction, str]:
    """What to do with one running worker given its RSS and how many tasks it has finished."""
    if reading is not None and reading.rss_mb > settings.worker_rss_hard_mb:
        return (
            WorkerAction.KILL,
            f"RSS {reading.rss_mb:.0f} MiB over WORKER_RSS_HARD_MB={settings.worker_rss_hard_mb}",
        )
    if reading is not None and reading.rss_mb > settings.worker_rss_soft_mb:
        return WorkerAction.RECYCLE, (
            f"RSS {reading.rss_mb:.0f} MiB over WORKER_RSS_SOFT_MB={settings.worker_rss_soft_mb}"
        )
    if max_tasks and tasks_done >= max_tasks:
        return WorkerAction.RECYCLE, f"{tasks_done} tasks done (recycle target {max_tasks})"
    return WorkerAction.NONE, ""
