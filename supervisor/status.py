"""The ``status`` reply of the status socket: pool, workers, host, alerts and config (secrets masked).

Pure functions, called by the supervisor's main loop when a client asks. Field names are the
ones docs/reference.md lists ("Status socket"); extra fields are additions, never renames.
"""

from __future__ import annotations

import math
from typing import Any

from llm_service import __version__
from llm_service.config import Settings
from llm_service.status_table import SlotSnapshot
from supervisor.health import Alert, average_processing_ms, health_of
from supervisor.limits import HostReading, ProcReading
from supervisor.slot import Slot


def worker_entry(
    slot: Slot, snap: SlotSnapshot | None, proc: ProcReading | None, *, now: float, wall: float
) -> dict[str, Any]:
    """One row of ``workers``. ``snap`` is None when the slot has no process."""
    mine = snap if snap is not None and slot.live and snap.pid == slot.pid else None
    row: dict[str, Any] = {
        "slot": slot.index,
        "pid": slot.pid if slot.live else None,
        "state": slot.state.value,
        "restarts": slot.restarts,
        "in_flight": mine.in_flight if mine else 0,
        "done": mine.done if mine else 0,
        "failed": mine.failed if mine else 0,
        "tokens_used": mine.tokens_used if mine else 0,
        "cpu_percent": round(proc.cpu_percent, 1) if proc else None,
        "rss_mb": round(proc.rss_mb, 1) if proc else None,
        "heartbeat_age_s": _age(mine.heartbeat_age(now)) if mine else None,
        "worker_id": slot.worker_id if slot.live else None,
        "group_instance_id": slot.group_instance_id,
        "uptime_s": round(now - slot.spawned_at, 1) if slot.live else None,
        "state_since_s": round(now - slot.since, 1),
        "last_exit": slot.last_exit or None,
        "stop_reason": slot.stop_reason.value if slot.live else None,
        "generation": slot.generation,
    }
    if mine is not None:
        row.update(_table_fields(mine, wall))
    return row


def _table_fields(snap: SlotSnapshot, wall: float) -> dict[str, Any]:
    return {
        "worker_state": snap.state.name,
        "capacity": snap.capacity,
        "retried": snap.retried,
        "avg_processing_ms": round(snap.avg_processing_ms, 1),
        "last_processing_ms": round(snap.last_processing_ms, 1),
        "kafka_errors": snap.kafka_errors,
        "bootstrap_failures": snap.bootstrap_failures,
        "conn": {"kafka": snap.conn_kafka.name, "s3": snap.conn_s3.name, "gigachat": snap.conn_gigachat.name},
        "breaker": snap.breaker.name,
        "control": {
            "intake_paused": snap.intake_paused,
            "drain": snap.drain,
            "concurrency_cap": snap.concurrency_cap,
        },
        "oldest_pending_age_s": round(wall - snap.oldest_pending_ts, 1) if snap.oldest_pending_ts else None,
        "tasks": [
            {"task_id": t.task_id, "stage": t.stage.name, "age_s": round(wall - t.started, 1)}
            for t in snap.tasks
        ],
    }


def _age(value: float) -> float | None:
    return None if math.isinf(value) else round(max(0.0, value), 2)


def system_entry(host: HostReading) -> dict[str, Any]:
    """CPU and RAM are the service's share the limits judge; ``limits_source`` says of what."""
    return {
        "cpu_percent": round(host.cpu_percent, 1),
        "ram_percent": round(host.ram_percent, 1),
        "disk_free_mb": None if math.isinf(host.disk_free_mb) else round(host.disk_free_mb, 1),
        "limits_source": host.source,
        "cpu_limit_cores": round(host.cpu_limit_cores, 2),
        "ram_limit_mb": round(host.ram_limit_bytes / 1024 / 1024, 1),
        "host_cpu_percent": round(host.host_cpu_percent, 1),
        "host_ram_percent": round(host.host_ram_percent, 1),
    }


def status_reply(
    *,
    workers: list[dict[str, Any]],
    snapshots: list[SlotSnapshot],
    alerts: list[Alert],
    host: HostReading,
    settings: Settings,
    supervisor: dict[str, Any],
) -> dict[str, Any]:
    return {
        "ok": True,
        "version": __version__,
        "health": health_of(alerts),
        "alerts": [a.as_dict() for a in alerts],
        "workers": workers,
        "system": system_entry(host),
        "totals": {
            "in_flight": sum(w["in_flight"] for w in workers),
            "done": sum(w["done"] for w in workers),
            "failed": sum(w["failed"] for w in workers),
            "tokens_used": sum(w["tokens_used"] for w in workers),
            "avg_processing_ms": round(average_processing_ms(snapshots), 1),
        },
        "supervisor": supervisor,
        "config": settings.masked(),
    }
