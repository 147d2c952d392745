"""ModelBreaker: what counts, transitions, fail-fast, one probe while half-open, log line, callbacks."""

from __future__ import annotations

import logging
import threading

import pytest
import requests

from llm_service.errors import BreakerOpenError, PermanentTaskError, TransientTaskError
from llm_service.log_lines import BREAKER_OPEN
from llm_service.status_table import Breaker
from llm_worker.gigachat.breaker import ModelBreaker
from tests.gigachat_client.fakes import FakeClock


def fail() -> None:
    raise requests.ConnectionError("refused")


def ok() -> str:
    return "ok"


def make(clock: FakeClock, fail_max: int = 3) -> tuple[ModelBreaker, list[Breaker]]:
    breaker = ModelBreaker(fail_max=fail_max, reset_timeout_s=10, clock=clock)
    changes: list[Breaker] = []
    breaker.on_change(changes.append)
    return breaker, changes


def trip(breaker: ModelBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(requests.ConnectionError):
            breaker.call(fail)


def test_opens_after_fail_max_consecutive_failures_and_logs_the_contract_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker, changes = make(FakeClock())
    caplog.set_level(logging.INFO, logger="llm_worker.gigachat.breaker")

    trip(breaker, 3)

    assert breaker.state is Breaker.OPEN
    assert changes == [Breaker.OPEN]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [BREAKER_OPEN % 3, "Circuit breaker OPEN for model gigachat"]
    assert warnings[0].getMessage() == "Circuit breaker OPEN after 3 failures"


def test_task_errors_and_4xx_do_not_count_and_a_success_resets() -> None:
    breaker, _ = make(FakeClock())
    trip(breaker, 2)
    breaker.call(ok)  # a success (a 4xx answer is one too: the server is alive)
    trip(breaker, 2)
    for exc in (
        PermanentTaskError("bad"),
        TransientTaskError("no slot", code="MODEL_BUSY"),
        ValueError("bug"),
    ):
        with pytest.raises(type(exc)):
            breaker.call(lambda e=exc: (_ for _ in ()).throw(e))  # type: ignore[misc]

    assert breaker.state is Breaker.CLOSED
    assert breaker.failure_count == 2


def test_open_fails_fast_without_calling() -> None:
    breaker, _ = make(FakeClock())
    trip(breaker, 3)
    called: list[int] = []

    with pytest.raises(BreakerOpenError) as caught:
        breaker.call(lambda: called.append(1))

    assert called == []
    assert caught.value.code == "BREAKER_OPEN" and isinstance(caught.value, TransientTaskError)


def test_after_the_reset_timeout_one_probe_closes_it(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    caplog.set_level(logging.INFO, logger="llm_worker.gigachat.breaker")
    trip(breaker, 3)
    clock.advance(10)

    assert breaker.call(ok) == "ok"

    assert breaker.state is Breaker.CLOSED
    assert changes == [Breaker.OPEN, Breaker.HALF_OPEN, Breaker.CLOSED]
    assert any("HALF-OPEN" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert any("CLOSED" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_a_failed_probe_reopens_for_another_timeout() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    trip(breaker, 3)
    clock.advance(10)

    trip(breaker, 1)  # the probe fails: the caller sees its own error, the breaker re-opens
    clock.advance(9)
    with pytest.raises(BreakerOpenError):
        breaker.call(ok)

    assert changes == [Breaker.OPEN, Breaker.HALF_OPEN, Breaker.OPEN]


def test_only_the_thread_whose_probe_failed_is_told_so() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    trip(breaker, 3)  # the failure that opens it is not a probe
    assert not breaker.probe_failed()
    clock.advance(10)
    trip(breaker, 1)  # the probe fails
    assert breaker.probe_failed()
    seen: list[bool] = []
    other = threading.Thread(target=lambda: seen.append(breaker.probe_failed()))
    other.start()
    other.join(5)
    assert seen == [False]
    with pytest.raises(BreakerOpenError):
        breaker.call(ok)
    assert not breaker.probe_failed()  # a refusal resets it: the flag is about the last call only


def held_call(breaker: ModelBreaker) -> tuple[threading.Event, threading.Thread]:
    """A call through ``breaker`` from another thread, inside it once this returns; it succeeds
    when the returned event is set."""
    inside, release = threading.Event(), threading.Event()

    def slow_ok() -> str:
        inside.set()
        release.wait(5)
        return "ok"

    caller = threading.Thread(target=breaker.call, args=(slow_ok,))
    caller.start()
    assert inside.wait(5)
    return release, caller


def test_half_open_admits_exactly_one_probe_while_others_are_refused() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    trip(breaker, 3)
    clock.advance(10)
    release, probe = held_call(breaker)
    refused = 0
    for _ in range(5):
        try:
            breaker.call(ok)
        except BreakerOpenError:
            refused += 1
    release.set()
    probe.join(5)

    assert refused == 5
    assert breaker.state is Breaker.CLOSED
    assert breaker.call(ok) == "ok"


def test_a_call_started_before_the_breaker_opened_does_not_close_it() -> None:
    breaker, _ = make(FakeClock())
    release, late = held_call(breaker)
    trip(breaker, 3)
    release.set()
    late.join(5)

    assert breaker.state is Breaker.OPEN
