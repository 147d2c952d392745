"""What a reload may change in place and what needs the workers replaced.

Pure logic, used by the supervisor on SIGHUP / ``llmctl reload``. A setting the workers never see
(pool size, limits, alert levels, the supervisor's own timings) is applied in place; any other change
(Kafka, S3, GigaChat, tasks, concurrency, logging) is handed to new workers by a rolling restart,
one slot at a time. Settings fixed at start (the socket path, the table size) need a restart of the
supervisor, which the reload says in its log line. A reload that changes the consumer group or the
tasks topic is refused: a rolling restart would run old and new workers side by side, two groups (or
two topics) consuming at once, and the same task could be processed twice.
"""

from __future__ import annotations

import dataclasses

from llm_service.config import Settings

SUPERVISOR_ONLY = frozenset(
    {
        "worker_processes",
        "worker_heartbeat_timeout",
        "worker_drain_timeout",
        "worker_max_tasks",
        "worker_rss_soft_mb",
        "worker_rss_hard_mb",
        "worker_max_processes",
        "worker_kill_grace_s",
        "worker_min_uptime_s",
        "worker_restart_backoff_s",
        "worker_restart_backoff_max_s",
        "worker_max_quick_failures",
        "worker_fatal_cooloff_s",
        "limit_cpu_percent",
        "limit_ram_percent",
        "alert_cpu_percent",
        "alert_ram_percent",
        "limit_disk_free_mb",
        "limit_window_s",
        "alert_bootstrap_failures",
        "alert_kafka_errors_per_min",
        "alert_avg_processing_s",
        "alert_consumer_lag_s",
        "supervisor_socket",
        "supervisor_stop_margin_s",
        "supervisor_lag_interval_s",
        "metrics_port",
        "metrics_addr",
    }
)
FIXED_AT_START = frozenset({"supervisor_socket", "worker_max_processes", "metrics_port", "metrics_addr"})
# The prefix too: old and new workers would hold two identities each, unchecked at start-up.
REFUSED_ON_RELOAD = frozenset({"kafka_group_id", "kafka_tasks_topic", "worker_instance_prefix"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Change:
    changed: tuple[str, ...]  # env names

    @property
    def needs_rolling_restart(self) -> bool:
        return any(name.lower() not in SUPERVISOR_ONLY for name in self.changed)

    @property
    def needs_supervisor_restart(self) -> tuple[str, ...]:
        return tuple(n for n in self.changed if n.lower() in FIXED_AT_START)

    @property
    def refused(self) -> tuple[str, ...]:
        """Changes a reload must not make (REFUSED_ON_RELOAD); the supervisor needs a restart."""
        return tuple(n for n in self.changed if n.lower() in REFUSED_ON_RELOAD)


def compare(old: Settings, new: Settings) -> Change:
    return Change(
        changed=tuple(
            f.name.upper()
            for f in dataclasses.fields(Settings)
            if getattr(old, f.name) != getattr(new, f.name)
        )
    )
