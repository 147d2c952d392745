"""GigaChat misbehaving, on the real stack: errors, an outage that opens the circuit breaker, tokens
that expire every few seconds. No task may fail; every task completes exactly once."""

from __future__ import annotations

import time

import pytest

from tests.waiting import wait_until
from tests.worker.conftest import Testbed
from tests.worker.harness import WorkerProcess, hold_for, send, task_bytes

pytestmark = pytest.mark.stack


def _send(bed: Testbed, prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}-{i:03d}" for i in range(count)]
    for task_id in ids:
        value = task_bytes(task_id, prompt=f"Summarise item {task_id}")
        send(bed.producer, bed.names.tasks, value, key=task_id.encode())
    return ids


def _all_completed_once(finals: dict[str, list[dict[str, object]]]) -> None:
    statuses = {t: [e["status"] for e in events] for t, events in finals.items()}
    assert {t: s for t, s in statuses.items() if s != [3]} == {}


def _fast_retrying_worker(
    bed: Testbed, *, concurrency: int, backoff_base_s: float, backoff_max_s: float, breaker_reset_s: float
) -> WorkerProcess:
    """A started worker whose model-call retries and breaker run on test time, not production time."""
    env = bed.env(
        WORKER_MAX_CONCURRENT_TASKS=str(concurrency),
        GIGACHAT_BACKOFF_BASE_S=str(backoff_base_s),
        GIGACHAT_BACKOFF_MAX_S=str(backoff_max_s),
        GIGACHAT_BREAKER_RESET_S=str(breaker_reset_s),
    )
    return bed.start_worker(env).started()


def test_30_percent_errors_still_complete_every_task(bed: Testbed) -> None:
    bed.emulator.config(error_rate=0.3, error_codes=[500, 429])
    status_log = bed.status_log()
    ids = _send(bed, "flaky", 100)
    worker = _fast_retrying_worker(
        bed, concurrency=8, backoff_base_s=0.05, backoff_max_s=0.5, breaker_reset_s=1
    )

    _all_completed_once(status_log.wait_finals(ids, timeout=180))
    assert "HTTP 500" in worker.log_text() or "HTTP 429" in worker.log_text()  # errors did happen


def test_outage_opens_the_breaker_pauses_intake_and_nothing_fails(bed: Testbed) -> None:
    bed.emulator.config(latency=0.3)
    status_log = bed.status_log()
    ids = _send(bed, "outage", 60)
    worker = _fast_retrying_worker(bed, concurrency=4, backoff_base_s=0.1, backoff_max_s=1, breaker_reset_s=3)
    wait_until(lambda: len(status_log.read() and status_log.finals()) >= 5, timeout=60, what="5 tasks done")
    bed.emulator.outage(20)
    outage_ends = time.monotonic() + 20

    worker.wait_for_log("Circuit breaker OPEN after", timeout=30)

    def started(*, after_open: bool) -> int:
        # The worker's own log orders events exactly; RECEIVED statuses of tasks started just before
        # the breaker opened may still be on their way through the producer's buffer.
        text = worker.log_text()
        cut = text.index("Circuit breaker OPEN after")
        return (text[cut:] if after_open else text[:cut]).count("Processing task")

    assert started(after_open=False) < len(ids), "every task was already taken before the breaker opened"
    # While the breaker is open, intake stays paused: no task starts until the outage nears its end.
    hold_for(
        lambda: started(after_open=True) <= 1,
        seconds=max(0.0, min(8.0, outage_ends - time.monotonic() - 2)),
        what="intake paused",
    )

    _all_completed_once(status_log.wait_finals(ids, timeout=120))
    assert "Circuit breaker CLOSED" in worker.log_text()


def test_tokens_expiring_every_5_seconds_fail_nothing(bed: Testbed) -> None:
    bed.emulator.config(token_ttl=5, latency=1.0)
    status_log = bed.status_log()
    ids = _send(bed, "ttl", 48)
    worker = bed.start_worker(bed.env(WORKER_MAX_CONCURRENT_TASKS="4")).started()

    _all_completed_once(status_log.wait_finals(ids, timeout=120))
    assert "Failed to process task" not in worker.log_text()
