"""Resource limits: measure over a window, then decide (the runbook's CPU/RAM < 80 %, disk > 1 GB).

Runs in the supervisor process. CPU and RAM are the service's own share, never the whole host's, so
a busy neighbour (a broker on the same machine) does not make the service shed load: inside a cgroup
v2 with a CPU or memory limit (a container), its usage against its limits (:mod:`supervisor.cgroup`,
``source="cgroup"``); otherwise the summed CPU and RSS of the supervisor and its workers against the
host's cores and RAM (``source="host"``). The host's own figures are reported beside them.

Measuring sits behind the :class:`Meter` seam (:class:`PsutilMeter` in production, a fake in
tests); :class:`LoadTracker` keeps the readings of the last LIMIT_WINDOW_S seconds;
:func:`decide_pool` and :func:`decide_worker` are pure functions of the averages and the settings,
so every decision is unit-tested with made-up readings.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psutil

from llm_service.config import Settings
from supervisor import cgroup

log = logging.getLogger(__name__)

_MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class HostReading:
    """What the limits judge: the service's CPU and RAM share (see the module docstring), free disk."""

    cpu_percent: float
    ram_percent: float
    disk_free_mb: float
    source: str = "host"  # "cgroup": of the cgroup's limits; "host": own processes of the host's capacity
    host_cpu_percent: float = 0.0  # the whole machine, reported only
    host_ram_percent: float = 0.0
    cpu_limit_cores: float = 0.0  # the capacity the CPU share is of
    ram_limit_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class ProcReading:
    cpu_percent: float
    rss_mb: float


class Meter(Protocol):
    def host(self, pids: list[int]) -> HostReading:
        """CPU since the previous call, RAM now, and the least free space of the work and temp dirs.

        ``pids`` are the workers: with no cgroup limit, they and the supervisor are the service.
        """
        ...

    def process(self, pid: int) -> ProcReading | None:
        """CPU since the previous call for this pid, and RSS now; None when the process is gone."""
        ...

    def forget(self, pid: int) -> None: ...


class PsutilMeter:
    """psutil and cgroup readings; every CPU figure compares with the previous call, never blocks.

    ``limits`` is the cgroup to judge by (:func:`supervisor.cgroup.find_limited`), None for the host.
    A process is read once per sample (:class:`ProcStats`).
    """

    def __init__(self, *, paths: tuple[str, ...] | None = None, limits: cgroup.Limits | None = None) -> None:
        self._paths = paths if paths is not None else (os.getcwd(), tempfile.gettempdir())
        self._ram_total = psutil.virtual_memory().total
        self._cores = cgroup.host_cores()
        self._cgroup = (
            cgroup.CgroupUsage(limits=limits, host_cores=self._cores, host_ram_bytes=self._ram_total)
            if limits is not None
            else None
        )
        self._pids = ProcStats()
        psutil.cpu_percent(interval=None)  # prime: the first call has nothing to compare with

    def host(self, pids: list[int]) -> HostReading:
        free = min(psutil.disk_usage(p).free for p in self._paths)
        host_cpu, host_ram = psutil.cpu_percent(interval=None), psutil.virtual_memory().percent
        if self._cgroup is not None:
            usage = self._cgroup.read(time.monotonic())
            limits = self._cgroup.limits
            cores, ram = limits.cpu_cores or self._cores, limits.memory_bytes or self._ram_total
            source, cpu, ram_percent = "cgroup", usage.cpu_percent, usage.ram_percent
        else:
            cores, ram = self._cores, self._ram_total
            source, (cpu, ram_percent) = "host", self._own_share([os.getpid(), *pids])
        return HostReading(
            cpu_percent=cpu,
            ram_percent=ram_percent,
            disk_free_mb=free / _MIB,
            source=source,
            host_cpu_percent=host_cpu,
            host_ram_percent=host_ram,
            cpu_limit_cores=cores,
            ram_limit_bytes=ram,
        )

    def _own_share(self, pids: list[int]) -> tuple[float, float]:
        """CPU and RSS of these processes as percentages of the host's cores and RAM."""
        readings = [self._pids.read(pid) for pid in pids]
        self._pids.keep(pids)
        cpu = sum(r.cpu_percent for r in readings if r is not None)
        rss = sum(r.rss_mb for r in readings if r is not None) * _MIB
        return cpu / self._cores, rss / self._ram_total * 100

    def process(self, pid: int) -> ProcReading | None:
        """The reading :meth:`host` just took of this pid (one sample, one read), or a fresh one."""
        return self._pids.latest(pid) or self._pids.read(pid)

    def forget(self, pid: int) -> None:
        self._pids.forget(pid)


class ProcStats:
    """CPU (of one core, since the previous read) and RSS of processes, one psutil read each.

    ``oneshot()`` makes psutil parse ``/proc/<pid>/stat`` once for both the CPU times and the RSS
    (``cpu_percent`` plus ``memory_info`` outside it parsed twice, and the supervisor's sample is most
    of what it does when idle). A pid's first read has nothing to compare with and shows 0 % CPU, as
    psutil's ``cpu_percent`` does.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._procs: dict[int, psutil.Process] = {}
        self._last: dict[int, tuple[float, float]] = {}  # pid -> (clock, CPU seconds) of the previous read
        self._latest: dict[int, ProcReading] = {}  # the readings of the current sample

    def read(self, pid: int) -> ProcReading | None:
        """None when the process is gone (or is not ours to read)."""
        try:
            proc = self._procs.get(pid)
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                rss = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self.forget(pid)
            return None
        now, cpu_s = self._clock(), times.user + times.system
        then = self._last.get(pid)
        self._last[pid] = (now, cpu_s)
        percent = 100 * (cpu_s - then[1]) / (now - then[0]) if then is not None and now > then[0] else 0.0
        reading = ProcReading(cpu_percent=max(0.0, percent), rss_mb=rss / _MIB)
        self._latest[pid] = reading
        return reading

    def latest(self, pid: int) -> ProcReading | None:
        """This pid's reading from the current sample, handed out once (the next one reads again)."""
        return self._latest.pop(pid, None)

    def keep(self, pids: list[int]) -> None:
        """Forget every pid not in ``pids`` (processes gone since the previous sample)."""
        for gone in set(self._last) - set(pids):
            self.forget(gone)

    def forget(self, pid: int) -> None:
        self._procs.pop(pid, None)
        self._last.pop(pid, None)
        self._latest.pop(pid, None)


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
    """Windowed averages for the host and each worker pid; the supervisor loop samples every few seconds."""

    def __init__(self, *, meter: Meter, window_s: float) -> None:
        self._meter = meter
        self._window_s = window_s
        self._cpu = Window(window_s)
        self._ram = Window(window_s)
        self._last = HostReading(cpu_percent=0.0, ram_percent=0.0, disk_free_mb=float("inf"))
        self._proc_cpu: dict[int, Window] = {}
        self._proc_rss: dict[int, float] = {}

    def set_window(self, window_s: float) -> None:
        self._window_s = self._cpu.span = self._ram.span = window_s
        for window in self._proc_cpu.values():
            window.span = window_s

    def sample(self, now: float, pids: list[int]) -> None:
        host = self._meter.host(pids)
        self._cpu.add(now, host.cpu_percent)
        self._ram.add(now, host.ram_percent)
        self._last = host
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
        """The last reading with CPU and RAM replaced by their window averages."""
        return dataclasses.replace(
            self._last, cpu_percent=self._cpu.average(), ram_percent=self._ram.average()
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
