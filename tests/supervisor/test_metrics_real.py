"""The Prometheus endpoint of a real ``llm-supervisor`` with real workers on the real stack.

What it shows (issue 8, item 5): counters move under load, the consumer lag rises and falls back to
zero, and nothing resets when a worker is killed with SIGKILL; failed tasks are counted by error code.
Every scrape of the test is kept, and no counter may ever go down from one scrape to the next.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import requests
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from devstack.procs import free_port
from tests.supervisor.conftest import SendTasks, StartSupervisor
from tests.supervisor.harness import Supervisor
from tests.waiting import wait_until
from tests.worker.harness import EmulatorControl, Names, StatusLog, task_bytes

pytestmark = pytest.mark.stack

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]
COMPLETED = ("llm_service_tasks_total", (("code", ""), ("status", "completed")))


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


class Scraper:
    """Scrapes /metrics, keeps every sample, and checks that no counter went down since the last one."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.samples: list[Sample] = []

    def scrape(self) -> Sample:
        response = requests.get(self.url, timeout=10)
        response.raise_for_status()
        assert response.headers["Content-Type"].startswith("text/plain")
        sample: Sample = {}
        counters: set[str] = set()
        for family in text_string_to_metric_families(response.text):
            for s in family.samples:
                sample[(s.name, tuple(sorted(s.labels.items())))] = s.value
                if family.type in ("counter", "histogram"):
                    counters.add(s.name)
        if self.samples:
            before = self.samples[-1]
            went_down = {
                k: (before[k], v) for k, v in sample.items() if k[0] in counters and v < before.get(k, 0)
            }
            assert not went_down, f"counters went down between scrapes: {went_down}"
        self.samples.append(sample)
        return sample

    def value(self, name: str, **labels: str) -> float:
        return self.scrape().get(_key(name, **labels), 0.0)

    def last(self, name: str, **labels: str) -> float | None:
        return self.samples[-1].get(_key(name, **labels))


def _start(start_real: StartSupervisor) -> tuple[Supervisor, Scraper]:
    port = free_port()
    sup = start_real(METRICS_PORT=str(port), METRICS_ADDR="127.0.0.1", SUPERVISOR_LAG_INTERVAL_S="1")
    sup.running(2, timeout=60)
    return sup, Scraper(port)


def test_counters_move_lag_falls_to_zero_and_nothing_resets_on_kill_9(
    start_real: StartSupervisor,
    send_tasks: SendTasks,
    status_log: StatusLog,
    emulator: EmulatorControl,
) -> None:
    emulator.config(latency=0.2)
    sup, metrics = _start(start_real)
    assert metrics.value("llm_service_tasks_total", code="", status="completed") == 0
    ids = send_tasks("m", 240)
    wait_until(lambda: metrics.value("llm_service_consumer_lag_messages") > 0, timeout=60, what="lag > 0")
    wait_until(
        lambda: metrics.value("llm_service_tasks_total", code="", status="completed") >= 20,
        timeout=60,
        what="20 done",
    )

    victim = next(w for w in sup.workers() if w["slot"] == 1)
    before_kill = metrics.scrape()
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(
        lambda: (
            metrics.value("llm_service_worker_restarts_total", slot="1") == 1
            and metrics.last("llm_service_workers", state="RUNNING") == 2
        ),
        timeout=60,
        what="slot 1 restarted and running",
    )
    after_kill = metrics.scrape()
    assert after_kill[COMPLETED] >= before_kill[COMPLETED]  # the dead worker's count was kept

    status_log.wait_finals(ids, timeout=180)
    wait_until(
        lambda: (
            metrics.value("llm_service_consumer_lag_messages") == 0
            and metrics.last("llm_service_consumer_lag_seconds") == 0
            and metrics.last("llm_service_tasks_in_flight") == 0
        ),
        timeout=60,
        what="lag back to zero",
    )
    end = metrics.scrape()
    completed_events = sum(1 for e in status_log.events() if e["status"] == 3)
    interrupted = end[_key("llm_service_tasks_interrupted_total")]
    # Each COMPLETED status is counted once by the worker that sent it, unless that worker was killed
    # between sending it and counting it (then it is among the interrupted tasks).
    assert completed_events - interrupted <= end[COMPLETED] <= completed_events
    assert end[COMPLETED] >= len(ids) - interrupted
    assert end[_key("llm_service_task_processing_seconds_count")] == end[COMPLETED]
    assert end[_key("llm_service_model_calls_total")] >= end[COMPLETED] - interrupted
    assert end[_key("llm_service_tokens_total")] > 0
    assert end[_key("llm_service_worker_deaths_total")] >= 1
    assert end[_key("llm_service_uptime_seconds")] > 0
    assert len(metrics.samples) > 10  # the no-decrease check above ran on every pair of them


def test_failed_tasks_are_counted_by_error_code(
    start_real: StartSupervisor, producer: KafkaProducer, names: Names, status_log: StatusLog
) -> None:
    _sup, metrics = _start(start_real)
    producer.send(names.tasks, key=b"bad-json", value=b"{not json")
    missing: dict[str, Any] = {"bucket": "llm-input", "key": "no/such/object.txt"}
    for i in range(2):
        task_id = f"gone-{i}"
        producer.send(names.tasks, key=task_id.encode(), value=task_bytes(task_id, prompt="x", input=missing))
    producer.flush(timeout=30)
    status_log.wait_finals(["gone-0", "gone-1"], timeout=120)
    wait_until(
        lambda: (
            metrics.value("llm_service_tasks_total", code="INPUT_NOT_FOUND", status="failed") == 2
            and metrics.last("llm_service_tasks_total", code="INVALID_JSON", status="failed") == 1
        ),
        timeout=60,
        what="failures counted by code",
    )
