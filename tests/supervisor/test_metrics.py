"""The exporter's text from a made-up view, and the endpoint served from a selector loop."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm_service.status_table import Breaker, Conn, StatusTable
from llm_worker.error_codes import COUNTED, counted_index
from llm_worker.spending import Balance, PaymentPause
from supervisor.budget import BudgetReport, Line, budget_alerts
from supervisor.limits import HostReading
from supervisor.metrics import Exporter, MetricsView, WorkerView
from supervisor.metrics_server import MetricsServer
from supervisor.slot import SlotState
from supervisor.totals import CounterBook
from tests.waiting import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def table() -> Iterator[StatusTable]:
    t = StatusTable.create(2)
    yield t
    t.close()


def view(table: StatusTable, book: CounterBook, **changes: object) -> MetricsView:
    records = [table.read(i) for i in range(table.slots)]
    values: dict[str, object] = {
        "totals": book.totals(records),
        "workers": [
            WorkerView(slot=0, state=SlotState.RUNNING, restarts=2, record=records[0], rss_mb=100.0),
            WorkerView(slot=1, state=SlotState.BACKOFF, restarts=5, record=None, rss_mb=None),
        ],
        "workers_wanted": 2,
        "deaths": 3,
        "tasks_interrupted": 1,
        "load": HostReading(cpu_percent=12.5, ram_percent=40.0, disk_free_mb=2048.0, source="cgroup"),
        "lag_s": 4.0,
        "lag_messages": 7,
        "uptime_s": 60.0,
        "start_time": 1_700_000_000.0,
        "health": "degraded",
        "alerts": [("worker_restarting", "warning")],
        "intake_paused": False,
        "intake_paused_by_operator": False,
        "shed_level": 0,
    }
    values.update(changes)
    return MetricsView(**values)  # type: ignore[arg-type]


def scrape(v: MetricsView) -> Samples:
    body, content_type = Exporter(view=lambda: v).render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_counters_histogram_and_codes_come_from_the_table(table: StatusTable) -> None:
    writer = table.writer(0)
    writer.update(breaker=Breaker.OPEN, conn_kafka=Conn.UP, conn_s3=Conn.DOWN)
    writer.task_finished(writer.task_started("a"), ok=True, tokens=30, processing_ms=700.0)
    writer.task_finished(writer.task_started("b"), ok=False, code_index=counted_index("INPUT_NOT_FOUND"))
    writer.add(failed=1)  # a failure counted without a code
    book = CounterBook()
    book.fold(table.read(0))  # as if a first worker had died with these counts...
    table.clear(0)
    table.writer(0).task_finished(table.writer(0).task_started("c"), ok=True, tokens=10, processing_ms=3000.0)
    s = scrape(view(table, book))  # ...and a second one counted one more
    assert s[("llm_service_tasks_total", (("code", ""), ("status", "completed")))] == 2
    assert s[("llm_service_tasks_total", (("code", "INPUT_NOT_FOUND"), ("status", "failed")))] == 1
    assert s[("llm_service_tasks_total", (("code", COUNTED[-1]), ("status", "failed")))] == 1
    assert s[("llm_service_tokens_total", ())] == 40
    assert s[("llm_service_task_processing_seconds_bucket", (("le", "1.0"),))] == 1
    assert s[("llm_service_task_processing_seconds_bucket", (("le", "5.0"),))] == 2  # cumulative
    assert s[("llm_service_task_processing_seconds_count", ())] == 2
    assert s[("llm_service_task_processing_seconds_sum", ())] == pytest.approx(3.7)
    assert s[("llm_service_worker_restarts_total", (("slot", "1"),))] == 5
    assert s[("llm_service_workers", (("state", "BACKOFF"),))] == 1
    assert s[("llm_service_breaker_state", (("slot", "0"),))] == 0  # the new worker's record: closed
    assert s[("llm_service_consumer_lag_messages", ())] == 7
    assert s[("llm_service_limits_source", (("source", "cgroup"),))] == 1
    assert s[("llm_service_disk_free_bytes", ())] == 2048 * 1024 * 1024
    assert s[("llm_service_alert_active", (("alert", "worker_restarting"), ("severity", "warning")))] == 1
    assert s[("llm_service_health", ())] == 1


def test_breaker_and_connections_of_live_workers(table: StatusTable) -> None:
    table.writer(0).update(breaker=Breaker.HALF_OPEN, conn_kafka=Conn.UP, conn_s3=Conn.DOWN)
    s = scrape(view(table, CounterBook()))
    assert s[("llm_service_breaker_state", (("slot", "0"),))] == 2
    assert s[("llm_service_breakers_open", ())] == 1
    assert s[("llm_service_connection_up", (("slot", "0"), ("target", "kafka")))] == 1
    assert s[("llm_service_connection_up", (("slot", "0"), ("target", "s3")))] == 0
    assert ("llm_service_connection_up", (("slot", "0"), ("target", "gigachat"))) not in s  # unknown yet


def test_unknown_lag_is_left_out_rather_than_shown_as_zero(table: StatusTable) -> None:
    s = scrape(view(table, CounterBook(), lag_s=None, lag_messages=None))
    assert not any(name.startswith("llm_service_consumer_lag") for name, _ in s)


def _ask(selector: selectors.BaseSelector, port: int, request: bytes) -> bytes:
    """Send a request and run the selector loop (the supervisor's job) until the server closes."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(request)
    client.setblocking(False)
    received = bytearray()

    def answered() -> bool:
        for key, mask in selector.select(0.05):
            key.data(mask)
        try:
            chunk = client.recv(65536)
        except BlockingIOError:
            return False
        received.extend(chunk)
        return not chunk

    wait_until(answered, timeout=10, what="the server's answer and close", step=0)
    client.close()
    return bytes(received)


def test_the_endpoint_answers_from_the_loop() -> None:
    selector = selectors.DefaultSelector()
    renders: list[int] = []

    def render() -> tuple[bytes, str]:
        renders.append(1)
        return b"llm_service_up 1\n", "text/plain; version=0.0.4"

    server = MetricsServer(addr="127.0.0.1", port=0, selector=selector, render=render)
    server.open()
    try:
        ok = _ask(selector, server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nllm_service_up 1\n")
        assert b"Content-Length: 17\r\n" in ok
        assert _ask(selector, server.port, b"GET /other HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
        assert _ask(selector, server.port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
        assert _ask(selector, server.port, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400")
        head = _ask(selector, server.port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        assert len(renders) == 2  # built at scrape time, once per GET/HEAD
    finally:
        server.close()
        selector.close()


def test_a_failing_render_is_a_500_not_a_dead_loop() -> None:
    selector = selectors.DefaultSelector()

    def render() -> tuple[bytes, str]:
        raise RuntimeError("bug")

    server = MetricsServer(addr="127.0.0.1", port=0, selector=selector, render=render)
    server.open()
    try:
        assert _ask(selector, server.port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500")
        ok = _ask(selector, server.port, b"GET / HTTP/1.1\r\n\r\n")  # still serving
        assert ok.startswith(b"HTTP/1.1 500")
    finally:
        server.close()
        selector.close()


def test_budget_gauges_show_spent_and_remaining_per_scope(table: StatusTable) -> None:
    budget = BudgetReport(
        day="2026-12-01",
        pool=Line(budget=1000, spent=400),
        tenants={"sales": Line(budget=100, spent=120), "ops": Line(budget=0, spent=7)},
        payment=PaymentPause(status=402, since=1.0, next_probe=2.0),
        balance=Balance(at=1.0, prepaid=True, packages={"GigaChat": 900.0, "GigaChat-Pro": 5000.0}),
        balance_alert=1000,
    )
    s = scrape(view(table, CounterBook(), budget=budget))
    assert s[("llm_service_budget_tokens_spent", (("scope", "pool"),))] == 400
    assert s[("llm_service_budget_tokens_remaining", (("scope", "pool"),))] == 600
    assert s[("llm_service_budget_tokens_remaining", (("scope", "tenant:sales"),))] == 0
    assert s[("llm_service_budget_tokens_spent", (("scope", "tenant:ops"),))] == 7
    assert ("llm_service_budget_tokens_remaining", (("scope", "tenant:ops"),)) not in s  # no budget
    assert s[("llm_service_model_payment_required", ())] == 1
    assert s[("llm_service_model_balance_tokens", (("usage", "GigaChat"),))] == 900
    assert budget_alerts(budget).keys() == {
        "token_budget_exhausted",
        "model_payment_required",
        "model_balance_low",
    }
    assert "GigaChat 900 tokens left" in budget_alerts(budget)["model_balance_low"][1]
    assert "tenant sales" in budget_alerts(budget)["token_budget_exhausted"][1]
