from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from llm_service.status_table import Breaker, StatusTable
from supervisor.health import AlertBook, ErrorRate, HealthInputs, find_alerts, health_of
from supervisor.limits import HostReading
from supervisor.slot import SlotState
from tests.supervisor.fakes import settings

S = settings()
CALM = HostReading(cpu_percent=10, ram_percent=10, disk_free_mb=50_000)


@pytest.fixture
def table() -> Iterator[StatusTable]:
    t = StatusTable.create(2)
    yield t
    t.close()


def inputs(table: StatusTable, **kw: object) -> HealthInputs:
    values: dict[str, object] = {
        "states": [SlotState.RUNNING, SlotState.RUNNING],
        "snapshots": [table.read(0), table.read(1)],
        "host": CALM,
        "kafka_errors_per_min": 0.0,
        "lag_s": None,
    }
    values.update(kw)
    return HealthInputs(**values)  # type: ignore[arg-type]


def test_calm_is_ok(table: StatusTable) -> None:
    assert find_alerts(S, inputs(table)) == {}


def test_runbook_triggers(table: StatusTable) -> None:
    table.writer(0).update(bootstrap_failures=5, breaker=Breaker.OPEN)
    w = table.writer(1)
    entry = w.task_started("x")
    w.task_finished(entry, ok=True, processing_ms=150_000)
    found = find_alerts(
        S,
        inputs(
            table,
            snapshots=[table.read(0), table.read(1)],
            kafka_errors_per_min=10.0,
            lag_s=601.0,
            host=HostReading(cpu_percent=91, ram_percent=92, disk_free_mb=100),
            states=[SlotState.FATAL, SlotState.BACKOFF],
        ),
    )
    assert {n: lvl for n, (lvl, _) in found.items()} == {
        "bootstrap_failing": "critical",
        "breaker_open": "critical",
        "kafka_errors": "critical",
        "slow_processing": "warning",
        "consumer_lag": "warning",
        "cpu_high": "warning",
        "ram_high": "warning",
        "disk_low": "critical",
        "worker_fatal": "critical",
        "worker_restarting": "warning",
    }


def test_just_below_thresholds_is_ok(table: StatusTable) -> None:
    table.writer(0).update(bootstrap_failures=4)
    found = find_alerts(
        S,
        inputs(
            table,
            snapshots=[table.read(0)],
            kafka_errors_per_min=9.9,
            lag_s=599.0,
            host=HostReading(cpu_percent=90, ram_percent=90, disk_free_mb=1024),
        ),
    )
    assert found == {}


def test_alerts_are_logged_once_when_raised_and_once_when_cleared(caplog: pytest.LogCaptureFixture) -> None:
    book = AlertBook()
    caplog.set_level(logging.INFO)
    for t in range(5):
        book.update({"consumer_lag": ("warning", f"lag {600 + t} s")}, 100.0 + t)
    assert book.health() == "degraded" and book.alerts()[0].since == 100.0
    assert book.alerts()[0].message == "lag 604 s"
    book.update({}, 200.0)
    book.update({}, 201.0)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("Alert raised: consumer_lag" in m for m in lines) == 1
    assert sum("Alert cleared: consumer_lag" in m for m in lines) == 1
    assert book.health() == "ok"


def test_health_levels() -> None:
    book = AlertBook()
    book.update({"a": ("warning", "x"), "b": ("critical", "y")}, 1.0)
    assert book.health() == "failing" and [a.name for a in book.alerts()] == ["b", "a"]
    assert health_of([]) == "ok"


def test_error_rate_per_minute_survives_worker_restarts(table: StatusTable) -> None:
    rate = ErrorRate()
    w = table.writer(0)
    w.update(pid=10)
    rate.add(0.0, [table.read(0)])
    w.add(kafka_errors=6)
    rate.add(10.0, [table.read(0)])
    table.clear(0)
    table.writer(0).update(pid=11, kafka_errors=4)  # a new worker's counter starts at 0
    rate.add(20.0, [table.read(0)])
    assert rate.per_minute() == 10.0
    rate.add(75.0, [table.read(0)])
    assert rate.per_minute() == 4.0
    rate.add(200.0, [table.read(0)])
    assert rate.per_minute() == 0.0
