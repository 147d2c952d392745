"""What the Prometheus endpoint shows, built from the supervisor's state when a scrape arrives.

Runs in the supervisor process, from the main loop (:mod:`supervisor.metrics_server` calls
:meth:`Exporter.render`). Nothing is updated per loop turn: the arbiter hands over a
:class:`MetricsView` (a plain copy of what it knows) at scrape time and :func:`families` turns it
into metric families, so a scrape costs one read of the status table. Names, labels and meaning are
in docs/metrics.md; the alert rules in deploy/prometheus/alerts.yml use them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from llm_service import __version__
from llm_service.status_table import PROCESSING_BUCKETS_S, Breaker, Conn, SlotSnapshot
from llm_worker.error_codes import COUNTED
from supervisor.budget import BudgetReport
from supervisor.limits import HostReading
from supervisor.slot import SlotState
from supervisor.totals import Totals

P = "llm_service_"
HEALTH_VALUES = {"ok": 0, "degraded": 1, "failing": 2}


@dataclass(frozen=True, kw_only=True)
class WorkerView:
    slot: int
    state: SlotState
    restarts: int
    record: SlotSnapshot | None  # the live worker's record; None without a process
    rss_mb: float | None


@dataclass(frozen=True, kw_only=True)
class MetricsView:
    """A copy of what the supervisor knows at scrape time."""

    totals: Totals
    workers: list[WorkerView]
    workers_wanted: int
    deaths: int
    tasks_interrupted: int
    load: HostReading
    lag_s: float | None
    lag_messages: int | None
    uptime_s: float
    start_time: float  # wall clock
    health: str
    alerts: list[tuple[str, str]]  # (name, level)
    intake_paused: bool
    intake_paused_by_operator: bool
    shed_level: int
    budget: BudgetReport | None = None


def families(view: MetricsView) -> Iterator[Metric]:
    yield from _task_families(view)
    yield from _worker_families(view)
    yield from _load_families(view.load)
    yield from _service_families(view)
    if view.budget is not None:
        yield from _budget_families(view.budget)


def _task_families(view: MetricsView) -> Iterator[Metric]:
    t = view.totals
    tasks = CounterMetricFamily(
        P + "tasks", "Tasks that reached a final status, by status and error code", labels=["status", "code"]
    )
    tasks.add_metric(["completed", ""], t.counts["done"])
    by_code = {code: n for code, n in zip(COUNTED, t.failed_by_code, strict=False) if n}
    uncoded = t.counts["failed"] - sum(by_code.values())  # counted by a path that gave no code
    if uncoded > 0:
        by_code[COUNTED[-1]] = by_code.get(COUNTED[-1], 0) + uncoded
    for code, n in by_code.items():
        tasks.add_metric(["failed", code], n)
    yield tasks
    cumulative, buckets = 0, []
    for bound, n in zip([*map(str, PROCESSING_BUCKETS_S), "+Inf"], t.buckets, strict=True):
        cumulative += n
        buckets.append((bound, float(cumulative)))
    yield HistogramMetricFamily(
        P + "task_processing_seconds",
        "Processing time of completed tasks (message taken to final status)",
        buckets=buckets,
        sum_value=t.processing_s_sum,
    )
    yield _counter("tasks_retried", "Task attempts retried after a transient error", t.counts["retried"])
    yield _counter("tokens", "GigaChat tokens used by completed tasks", t.counts["tokens_used"])
    yield _counter("model_calls", "Chat requests sent to GigaChat", t.counts["model_calls"])
    yield _counter("model_errors", "Chat requests that failed", t.counts["model_errors"])
    yield _counter(
        "kafka_errors", "Kafka connection and send errors of the workers", t.counts["kafka_errors"]
    )
    yield _counter("tasks_interrupted", "Tasks in flight in workers that died", view.tasks_interrupted)
    live = [w.record for w in view.workers if w.record is not None]
    yield _gauge("tasks_in_flight", "Tasks being processed now", sum(r.in_flight for r in live))


def _worker_families(view: MetricsView) -> Iterator[Metric]:
    states = GaugeMetricFamily(P + "workers", "Worker slots by supervisor slot state", labels=["state"])
    for slot_state in SlotState:
        states.add_metric([slot_state.value], sum(1 for w in view.workers if w.state is slot_state))
    yield states
    yield _gauge(
        "workers_wanted", "Workers the pool should run (WORKER_PROCESSES, llmctl scale)", view.workers_wanted
    )
    restarts = CounterMetricFamily(P + "worker_restarts", "Workers started again in a slot", labels=["slot"])
    breaker = GaugeMetricFamily(
        P + "breaker_state",
        "GigaChat circuit breaker per worker: 0 closed, 1 open, 2 half-open",
        labels=["slot"],
    )
    conn = GaugeMetricFamily(
        P + "connection_up",
        "Worker connection: 1 up, 0 down (absent: not known yet)",
        labels=["slot", "target"],
    )
    rss = GaugeMetricFamily(P + "worker_rss_bytes", "Resident memory of each worker", labels=["slot"])
    for w in view.workers:
        slot = str(w.slot)
        restarts.add_metric([slot], w.restarts)
        if w.rss_mb is not None:
            rss.add_metric([slot], w.rss_mb * 1024 * 1024)
        if w.record is None:
            continue
        breaker.add_metric([slot], int(w.record.breaker))
        for target, state in (
            ("kafka", w.record.conn_kafka),
            ("s3", w.record.conn_s3),
            ("gigachat", w.record.conn_gigachat),
        ):
            if state is not Conn.UNKNOWN:
                conn.add_metric([slot, target], 1 if state is Conn.UP else 0)
    yield from (restarts, breaker, conn, rss)
    live = [w.record for w in view.workers if w.record is not None]
    yield _gauge(
        "breakers_open",
        "Workers whose GigaChat breaker is not closed (open or half-open)",
        sum(1 for r in live if r.breaker is not Breaker.CLOSED),
    )
    yield _gauge(
        "bootstrap_failures",
        "Most consecutive failed bootstraps of one worker",
        max((r.bootstrap_failures for r in live), default=0),
    )
    yield _counter("worker_deaths", "Worker exits nobody asked for", view.deaths)


def _load_families(load: HostReading) -> Iterator[Metric]:
    info = GaugeMetricFamily(P + "limits_source", "Where CPU and RAM figures come from", labels=["source"])
    info.add_metric([load.source], 1)
    yield info
    yield _gauge(
        "cpu_percent",
        "Service CPU, % of its limit (cgroup) or of the host's cores; window average",
        load.cpu_percent,
    )
    yield _gauge(
        "ram_percent",
        "Service RAM, % of its limit (cgroup) or of the host's RAM; window average",
        load.ram_percent,
    )
    yield _gauge("cpu_limit_cores", "Cores the CPU percentage is of", load.cpu_limit_cores)
    yield _gauge("ram_limit_bytes", "Bytes the RAM percentage is of", load.ram_limit_bytes)
    yield _gauge("host_cpu_percent", "The whole host's CPU (reported, not judged)", load.host_cpu_percent)
    yield _gauge("host_ram_percent", "The whole host's RAM (reported, not judged)", load.host_ram_percent)
    if not math.isinf(load.disk_free_mb):
        yield _gauge(
            "disk_free_bytes",
            "Free space of the working or temp directory, the smaller",
            load.disk_free_mb * 1024 * 1024,
        )


def _service_families(view: MetricsView) -> Iterator[Metric]:
    if view.lag_s is not None:
        yield _gauge("consumer_lag_seconds", "Age of the oldest task not yet processed", view.lag_s)
    if view.lag_messages is not None:
        yield _gauge(
            "consumer_lag_messages",
            "Messages of the tasks topic the group has not committed",
            view.lag_messages,
        )
    yield _gauge("uptime_seconds", "Seconds since the supervisor started", view.uptime_s)
    yield _gauge("start_time_seconds", "Unix time the supervisor started", view.start_time)
    yield _gauge(
        "health", "Supervisor health: 0 ok, 1 degraded, 2 failing", HEALTH_VALUES.get(view.health, 2)
    )
    alerts = GaugeMetricFamily(
        P + "alert_active", "The supervisor's own alerts now raised", labels=["alert", "severity"]
    )
    for name, level in view.alerts:
        alerts.add_metric([name, level], 1)
    yield alerts
    paused = GaugeMetricFamily(P + "intake_paused", "1 while workers take no new tasks", labels=["reason"])
    paused.add_metric(["operator"], int(view.intake_paused_by_operator))
    paused.add_metric(["limits"], int(view.intake_paused and not view.intake_paused_by_operator))
    yield paused
    yield _gauge(
        "shed_level", "Load shedding: 0 none, 1 concurrency halved, 2 intake paused", view.shed_level
    )
    info = GaugeMetricFamily(P + "build_info", "The running version", labels=["version"])
    info.add_metric([__version__], 1)
    yield info


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(P + name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(P + name, doc, value=value)


class _ViewCollector(Collector):
    def __init__(self, view: Callable[[], MetricsView]) -> None:
        self._view = view

    def collect(self) -> Iterable[Metric]:
        return list(families(self._view()))


class Exporter:
    """A registry of its own (no process or GC collectors of the default one) over the view callback."""

    def __init__(self, *, view: Callable[[], MetricsView]) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_ViewCollector(view))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self._registry), CONTENT_TYPE_LATEST


def _budget_families(budget: BudgetReport) -> Iterator[Metric]:
    """Today's token spending and budgets (supervisor/budget.py); a scope is "pool" or "tenant:<name>"."""
    spent = GaugeMetricFamily(P + "budget_tokens_spent", "Tokens spent today", labels=["scope"])
    limit = GaugeMetricFamily(P + "budget_tokens", "Daily token budget (absent: none)", labels=["scope"])
    left = GaugeMetricFamily(
        P + "budget_tokens_remaining", "Tokens left of today's budget (absent: no budget)", labels=["scope"]
    )
    lines = [("pool", budget.pool), *((f"tenant:{n}", line) for n, line in sorted(budget.tenants.items()))]
    for scope, line in lines:
        spent.add_metric([scope], line.spent)
        if line.remaining is not None:
            limit.add_metric([scope], line.budget)
            left.add_metric([scope], line.remaining)
    yield spent
    yield limit
    yield left
    if budget.balance is not None and budget.balance.prepaid:
        balance = GaugeMetricFamily(
            P + "model_balance_tokens", "Tokens left of each prepaid GigaChat package", labels=["usage"]
        )
        for usage, tokens in sorted(budget.balance.packages.items()):
            balance.add_metric([usage], tokens)
        yield balance
    yield _gauge(
        "model_payment_required",
        "1 while GigaChat answers 402/403 and intake waits for a probe to succeed",
        1 if budget.payment is not None else 0,
    )
