"""The service's own share of a cgroup v2 limit: what ``docker stats`` shows for its container.

Runs in the supervisor process, called by :class:`supervisor.limits.PsutilMeter` about once a second.
A container (or a systemd unit with ``CPUQuota=``/``MemoryMax=``) puts the service in a cgroup whose
``cpu.max`` and ``memory.max`` are its limits; the host's figures would then judge the service by
what other containers do. :func:`find_limited` walks from the service's own cgroup
(``/proc/self/cgroup``) up to the mount's root and takes the first with a CPU or memory limit;
:class:`CgroupUsage` turns that cgroup's counters into percentages of its limits:

* CPU: ``cpu.stat`` ``usage_usec`` since the previous reading / (elapsed time x quota cores);
  without a CPU quota, the cores the host has (``os.cpu_count``);
* RAM: ``memory.current`` minus ``inactive_file`` of ``memory.stat`` (page cache the kernel drops
  first; ``docker stats`` leaves it out the same way) / ``memory.max``; without a memory limit,
  the host's total RAM.

The root is a parameter so the tests build a fake cgroup folder in ``tmp_path``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True, kw_only=True)
class Limits:
    path: Path
    cpu_cores: float | None  # quota / period, None: no CPU limit
    memory_bytes: int | None  # None: no memory limit


def own_cgroup(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> Path | None:
    """This process's cgroup v2 directory, or None without the unified hierarchy."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            path = root / line[3:].strip().lstrip("/")
            return path if (path / "cgroup.controllers").exists() else None
    return None  # cgroup v1 only: its files have other names; the host's figures are used


def read_limits(path: Path) -> Limits:
    return Limits(path=path, cpu_cores=_cpu_cores(path), memory_bytes=_memory_max(path))


def find_limited(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> Limits | None:
    """The nearest cgroup, from our own up to ``root``, with a CPU or memory limit; None when none has one."""
    path = own_cgroup(root, proc_self_cgroup)
    while path is not None:
        limits = read_limits(path)
        if limits.cpu_cores is not None or limits.memory_bytes is not None:
            return limits
        if path == root or root not in path.parents:
            return None
        path = path.parent
    return None


def _cpu_cores(path: Path) -> float | None:
    """``cpu.max`` is ``"<quota> <period>"`` or ``"max <period>"``; the root cgroup has none."""
    try:
        quota, period = (path / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _memory_max(path: Path) -> int | None:
    try:
        value = (path / "memory.max").read_text().strip()
    except OSError:
        return None
    return None if value == "max" else int(value)


def _stat_value(file: Path, key: str) -> int:
    """One ``key value`` line of a flat-keyed cgroup file (cpu.stat, memory.stat); 0 when absent."""
    try:
        for line in file.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


@dataclass(frozen=True, kw_only=True)
class Usage:
    cpu_percent: float
    ram_percent: float


class CgroupUsage:
    """Percentages of one cgroup's limits; each :meth:`read` compares CPU time with the previous one."""

    def __init__(self, *, limits: Limits, host_cores: float, host_ram_bytes: int) -> None:
        self.limits = limits
        self._cores = limits.cpu_cores or host_cores
        self._ram = limits.memory_bytes or host_ram_bytes
        self._last: tuple[float, int] | None = None

    def read(self, now: float) -> Usage:
        """CPU since the previous call (0 on the first), memory now."""
        used_usec = _stat_value(self.limits.path / "cpu.stat", "usage_usec")
        cpu = 0.0
        if self._last is not None and now > self._last[0]:
            cpu = (used_usec - self._last[1]) / 1e6 / (now - self._last[0]) / self._cores * 100
        self._last = (now, used_usec)
        return Usage(cpu_percent=max(0.0, cpu), ram_percent=self.memory_used() / self._ram * 100)

    def memory_used(self) -> int:
        try:
            current = int((self.limits.path / "memory.current").read_text())
        except (OSError, ValueError):
            return 0
        return max(0, current - _stat_value(self.limits.path / "memory.stat", "inactive_file"))


def host_cores() -> float:
    return float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
