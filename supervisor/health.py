"""Health and alerts from the runbook's triggers.

Runs in the supervisor process. :func:`find_alerts` is a pure function from what the supervisor
knows (slot states, the workers' table records, host averages, error rate, consumer lag) to the
alerts that hold now; :class:`AlertBook` remembers since when, logs each alert once when raised and
once when cleared, and derives health: ``failing`` with any critical alert, ``degraded`` with a
warning, else ``ok``.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any

from llm_service.config import Settings
from llm_service.socket_protocol import DEGRADED, FAILING, OK
from llm_service.status_table import Breaker, SlotSnapshot
from supervisor.limits import HostReading
from supervisor.slot import SlotState

log = logging.getLogger(__name__)

CRITICAL = "critical"
WARNING = "warning"


@dataclass(frozen=True, kw_only=True)
class Alert:
    name: str
    level: str
    message: str
    since: float  # wall clock

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "message": self.message, "since": self.since}


@dataclass(frozen=True, kw_only=True)
class HealthInputs:
    states: list[SlotState]  # wanted slots only
    snapshots: list[SlotSnapshot]  # records of live workers
    host: HostReading
    kafka_errors_per_min: float
    lag_s: float | None
    intake_paused_by_operator: bool = False
    boot_failures: int = 0  # the most consecutive failed boots of one slot, across its restarts
    conflicts: tuple[str, ...] = ()  # group_instance_ids of slots stopped because they were fenced


Found = dict[str, tuple[str, str]]  # name -> (level, message)


def find_alerts(settings: Settings, inputs: HealthInputs) -> Found:
    found: Found = {}
    _worker_alerts(settings, inputs, found)
    _conflict_alert(settings, inputs, found)
    _throughput_alerts(settings, inputs, found)
    _host_alerts(settings, inputs.host, found)
    return found


def _worker_alerts(settings: Settings, inputs: HealthInputs, found: Found) -> None:
    fatal = inputs.states.count(SlotState.FATAL)
    if fatal:
        found["worker_fatal"] = (CRITICAL, f"{fatal} worker slot(s) FATAL after repeated quick failures")
    backoff = inputs.states.count(SlotState.BACKOFF)
    if backoff:
        found["worker_restarting"] = (WARNING, f"{backoff} worker slot(s) waiting to restart after failures")
    boot = max([inputs.boot_failures, *(s.bootstrap_failures for s in inputs.snapshots)])
    if boot >= settings.alert_bootstrap_failures:
        found["bootstrap_failing"] = (CRITICAL, f"bootstrap failed {boot} times in a row")
    open_ = sum(1 for s in inputs.snapshots if s.breaker is Breaker.OPEN)
    if open_:
        found["breaker_open"] = (CRITICAL, f"GigaChat circuit breaker OPEN in {open_} worker(s)")
    if inputs.kafka_errors_per_min >= settings.alert_kafka_errors_per_min:
        found["kafka_errors"] = (
            CRITICAL,
            f"{inputs.kafka_errors_per_min:.0f} Kafka connection errors a minute",
        )
    if inputs.intake_paused_by_operator:
        found["intake_paused"] = (
            WARNING,
            "intake paused by `llmctl drain`; `llmctl resume` takes tasks again",
        )


def _conflict_alert(settings: Settings, inputs: HealthInputs, found: Found) -> None:
    if inputs.conflicts:
        found["instance_conflict"] = (
            CRITICAL,
            f"group_instance_id {', '.join(inputs.conflicts)} fenced by another process in group "
            f"{settings.kafka_group_id}; those slots are stopped. Two supervisors share "
            "WORKER_INSTANCE_PREFIX: give each host its own and restart this one",
        )


def _throughput_alerts(settings: Settings, inputs: HealthInputs, found: Found) -> None:
    avg_s = average_processing_ms(inputs.snapshots) / 1000
    if avg_s > settings.alert_avg_processing_s:
        found["slow_processing"] = (WARNING, f"average processing {avg_s:.0f} s")
    if inputs.lag_s is not None and inputs.lag_s > settings.alert_consumer_lag_s:
        found["consumer_lag"] = (WARNING, f"oldest unprocessed task is {inputs.lag_s:.0f} s old")


def _host_alerts(settings: Settings, host: HostReading, found: Found) -> None:
    if host.cpu_percent > settings.alert_cpu_percent:
        found["cpu_high"] = (
            WARNING,
            f"service CPU {host.cpu_percent:.0f}% of its {_capacity(host)} "
            f"(average of {settings.limit_window_s:.0f} s)",
        )
    if host.ram_percent > settings.alert_ram_percent:
        found["ram_high"] = (WARNING, f"service RAM {host.ram_percent:.0f}% of its {_capacity(host)}")
    if host.disk_free_mb < settings.limit_disk_free_mb:
        found["disk_low"] = (CRITICAL, f"free disk {host.disk_free_mb:.0f} MiB; intake paused")


def _capacity(host: HostReading) -> str:
    return "cgroup limit" if host.source == "cgroup" else "host's capacity"


def average_processing_ms(snapshots: list[SlotSnapshot]) -> float:
    """The average over all workers, weighted by how many tasks each finished."""
    done = sum(s.done for s in snapshots)
    return sum(s.avg_processing_ms * s.done for s in snapshots) / done if done else 0.0


def health_of(alerts: list[Alert]) -> str:
    levels = {a.level for a in alerts}
    return FAILING if CRITICAL in levels else DEGRADED if WARNING in levels else OK


class AlertBook:
    """The alerts that hold now, each with the wall time it was raised."""

    def __init__(self) -> None:
        self._active: dict[str, Alert] = {}

    def update(self, found: Found, now: float) -> None:
        for name, (level, message) in found.items():
            known = self._active.get(name)
            if known is None or known.level != level:
                self._active[name] = Alert(name=name, level=level, message=message, since=now)
                log.log(
                    logging.ERROR if level == CRITICAL else logging.WARNING,
                    "Alert raised: %s (%s): %s",
                    name,
                    level,
                    message,
                )
            else:
                self._active[name] = Alert(name=name, level=level, message=message, since=known.since)
        for name in [n for n in self._active if n not in found]:
            alert = self._active.pop(name)
            log.info("Alert cleared: %s after %.0f s", name, now - alert.since)

    def alerts(self) -> list[Alert]:
        return sorted(self._active.values(), key=lambda a: (a.level != CRITICAL, a.since, a.name))

    def health(self) -> str:
        return health_of(list(self._active.values()))


class ErrorRate:
    """Per-minute rate of a cumulative per-slot counter (kafka_errors) that restarts at 0 with each pid."""

    def __init__(self, *, span_s: float = 60.0) -> None:
        self._span = span_s
        self._last: dict[int, tuple[int, int]] = {}  # slot -> (pid, counter)
        self._deltas: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, now: float, snapshots: list[SlotSnapshot]) -> None:
        for snap in snapshots:
            pid, before = self._last.get(snap.slot, (snap.pid, 0))
            delta = snap.kafka_errors - before if pid == snap.pid else snap.kafka_errors
            if delta > 0:
                self._deltas.append((now, delta))
            self._last[snap.slot] = (snap.pid, snap.kafka_errors)
        while self._deltas and self._deltas[0][0] < now - self._span:
            self._deltas.popleft()

    def per_minute(self) -> float:
        return sum(d for _, d in self._deltas) * 60.0 / self._span
