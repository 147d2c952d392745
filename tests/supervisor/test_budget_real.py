"""Token budgets and the 402 pause on the real stack: real supervisor, real workers, Kafka, S3, emulator.

The must-show behaviours of issue 11 items 1-2: a pool budget runs out mid-run, the tasks wait (none
fails) and a budget raised by SIGHUP lets them finish; one tenant's budget is spent while the other
tenant's tasks, on the same partition, finish; a 402 window pauses intake and it resumes by itself
with none failed.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.supervisor.conftest import SendTasks, StartSupervisor
from tests.supervisor.harness import Supervisor
from tests.waiting import wait_until
from tests.worker.harness import EmulatorControl, StatusLog, hold_for

pytestmark = pytest.mark.stack

COMPLETED, FAILED = 3, 4


@pytest.fixture
def billing(emulator: EmulatorControl) -> Iterator[str]:
    url = f"{emulator.url}/_emulator/billing"
    yield url
    requests.post(url, json={"refuse": 0, "enforce": False}, timeout=10).raise_for_status()


def finals(status_log: StatusLog, ids: list[str]) -> dict[str, int]:
    status_log.read(0.05)
    wanted = set(ids)
    return {t: events[-1]["status"] for t, events in status_log.finals().items() if t in wanted}


def count(status_log: StatusLog, ids: list[str], status: int) -> int:
    return sum(1 for s in finals(status_log, ids).values() if s == status)


def alerts(sup: Supervisor) -> set[str]:
    reply = sup.status()
    return {a["name"] for a in reply["alerts"]} if reply else set()


def budget(sup: Supervisor) -> dict[str, Any]:
    reply = sup.status()
    assert reply is not None
    result: dict[str, Any] = reply["supervisor"]["budget"]
    return result


def all_paused(sup: Supervisor) -> bool:
    rows = sup.workers()
    return len(rows) == 2 and all(w.get("worker_state") == "PAUSED" for w in rows)


def wait_stalled(sup: Supervisor, status_log: StatusLog, ids: list[str]) -> int:
    """Once every worker paused, the tasks that passed the check before finish; then none does."""
    wait_until(lambda: all_paused(sup), timeout=60, what="every worker paused")
    hold_for(lambda: count(status_log, ids, FAILED) == 0, seconds=3, what="no FAILED")  # stragglers land
    done = count(status_log, ids, COMPLETED)
    hold_for(
        lambda: count(status_log, ids, COMPLETED) == done and count(status_log, ids, FAILED) == 0,
        seconds=5,
        what="no task finishing (or failing) while paused",
    )
    return done


def test_pool_budget_runs_out_tasks_wait_and_sighup_raising_it_finishes_them(
    start_real: StartSupervisor, send_tasks: SendTasks, status_log: StatusLog
) -> None:
    sup = start_real(env_text="GIGACHAT_TOKEN_BUDGET_DAILY=300\n")
    sup.running(2, timeout=60)
    ids = send_tasks("pool", 40)
    wait_until(lambda: "token_budget_exhausted" in alerts(sup), timeout=90, what="the budget alert")
    done = wait_stalled(sup, status_log, ids)
    assert 0 < done < len(ids), f"{done} of {len(ids)} done: the budget should run out mid-run"
    spent = budget(sup)
    assert spent["pool"]["spent"] >= 300 and spent["pool"]["remaining"] == 0
    assert spent["intake_paused_reason"] == "pool token budget spent"

    # The books outlive the whole pool: a new supervisor (new workers) on the same day still waits.
    # A generous stop: on a busy machine two workers' drain and Kafka close took over the default 30 s.
    assert sup.stop(timeout=120) == 0
    sup = start_real(env_file=sup.env_file)
    sup.running(2, timeout=60)
    wait_until(lambda: "token_budget_exhausted" in alerts(sup), timeout=60, what="the alert after a restart")
    assert budget(sup)["pool"]["spent"] == spent["pool"]["spent"]
    assert wait_stalled(sup, status_log, ids) == done

    sup.rewrite_env("GIGACHAT_TOKEN_BUDGET_DAILY=10000000\n")
    sup.signal(signal.SIGHUP)
    done_all = status_log.wait_finals(ids, timeout=180)
    assert all(e["status"] == COMPLETED for events in done_all.values() for e in events)
    wait_until(lambda: "token_budget_exhausted" not in alerts(sup), timeout=30, what="the alert cleared")
    assert budget(sup)["pool"]["remaining"] > 0


def test_a_spent_tenant_waits_while_another_tenants_tasks_on_the_same_partition_finish(
    start_real: StartSupervisor, send_tasks: SendTasks, status_log: StatusLog
) -> None:
    sup = start_real(
        env_text="TASK_TENANT_FIELD=metadata.team\nGIGACHAT_TENANT_BUDGETS=sales=150,ops=10000000\n"
    )
    sup.running(2, timeout=60)
    # One key: every task on one partition, sales first, so a blocking design would stall ops.
    sales = send_tasks("sales", 30, metadata={"team": "sales"}, key="one")
    ops = send_tasks("ops", 30, metadata={"team": "ops"}, key="one")
    wait_until(lambda: "token_budget_exhausted" in alerts(sup), timeout=90, what="the budget alert")
    status_log.wait_finals(ops, timeout=180)
    assert count(status_log, ops, COMPLETED) == len(ops)
    held = len(sales) - count(status_log, sales, COMPLETED)
    assert held > 0, "the sales budget should leave tasks waiting"
    assert count(status_log, sales, FAILED) == 0
    tenants = budget(sup)["tenants"]
    assert tenants["sales"]["remaining"] == 0 and tenants["ops"]["remaining"] > 0
    assert budget(sup)["intake_paused_reason"] is None  # the pool keeps taking tasks

    sup.rewrite_env("TASK_TENANT_FIELD=metadata.team\nGIGACHAT_TENANT_BUDGETS=sales=10000000\n")
    sup.signal(signal.SIGHUP)
    done_all = status_log.wait_finals(sales, timeout=180)
    assert all(e["status"] == COMPLETED for events in done_all.values() for e in events)


def test_a_402_window_pauses_intake_and_it_resumes_by_itself_with_none_failed(
    *,
    start_real: StartSupervisor,
    send_tasks: SendTasks,
    status_log: StatusLog,
    emulator: EmulatorControl,
    billing: str,
) -> None:
    emulator.config(latency=0.2)
    sup = start_real(GIGACHAT_PAYMENT_PROBE_S="2")
    sup.running(2, timeout=60)
    ids = send_tasks("pay", 40)
    wait_until(lambda: count(status_log, ids, COMPLETED) >= 5, timeout=60, what="work under way")
    requests.post(billing, json={"refuse": 402}, timeout=10).raise_for_status()
    wait_until(lambda: "model_payment_required" in alerts(sup), timeout=60, what="the payment alert")
    assert budget(sup)["payment_required"]["status"] == 402
    done = wait_stalled(sup, status_log, ids)
    assert done < len(ids)
    refused = refusals(emulator)
    wait_until(lambda: refusals(emulator) > refused, timeout=30, what="a probe call while paused")

    requests.post(billing, json={"refuse": 0}, timeout=10).raise_for_status()
    done_all = status_log.wait_finals(ids, timeout=180)
    assert all(e["status"] == COMPLETED for events in done_all.values() for e in events)
    wait_until(lambda: "model_payment_required" not in alerts(sup), timeout=30, what="the alert cleared")
    assert budget(sup)["payment_required"] is None
    assert "GigaChat answered again after a 402/403; intake resumes" in sup.log_text()


def refusals(emulator: EmulatorControl) -> int:
    body = requests.get(f"{emulator.url}/_emulator/calls", timeout=30).json()
    return sum(1 for c in body["calls"] if c.get("status") == 402)


def test_the_balance_read_falls_with_usage_and_warns_below_the_threshold(
    start_real: StartSupervisor, send_tasks: SendTasks, status_log: StatusLog, billing: str
) -> None:
    packages = {"GigaChat": 2000, "GigaChat-Pro": 2000, "GigaChat-Max": 2000}
    requests.post(billing, json={"packages": packages}, timeout=10).raise_for_status()
    sup = start_real(GIGACHAT_BALANCE_INTERVAL_S="1", GIGACHAT_BALANCE_ALERT_TOKENS="1990")
    sup.running(2, timeout=60)
    wait_until(
        lambda: (budget(sup)["balance"] or {}).get("packages") == packages, timeout=60, what="a reading"
    )
    assert "model_balance_low" not in alerts(sup)
    ids = send_tasks("bal", 30)
    status_log.wait_finals(ids, timeout=180)
    assert count(status_log, ids, COMPLETED) == len(ids)
    used = requests.get(billing, timeout=10).json()["used"]
    assert used and all(tokens > 10 for tokens in used.values())

    def read_after_usage() -> bool:
        left = budget(sup)["balance"]["packages"]
        return all(left[model] == 2000 - tokens for model, tokens in used.items())

    wait_until(read_after_usage, timeout=60, what="a reading showing the usage")
    wait_until(lambda: "model_balance_low" in alerts(sup), timeout=30, what="the low-balance alert")
