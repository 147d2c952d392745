"""The one backoff function (llm_service/backoff.py) and the four callers that keep their own shape."""

from __future__ import annotations

import pytest

from llm_service import exit_codes
from llm_service.backoff import Jitter, compute_backoff
from llm_service.config import Settings
from llm_service.status_table import StatusTable
from llm_worker import bootstrap as bootstrap_module
from llm_worker.gigachat.backoff import Retrier
from llm_worker.retry_policy import RetryPolicy
from supervisor.backoff import BackoffPolicy


def test_doubles_from_the_base_then_stays_at_the_cap() -> None:
    pauses = [compute_backoff(step, base_s=0.5, max_s=5.0) for step in range(1, 7)]
    assert pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_step_below_one_counts_as_the_first() -> None:
    assert compute_backoff(0, base_s=2.0, max_s=60.0) == 2.0
    assert compute_backoff(-3, base_s=2.0, max_s=60.0) == 2.0


def test_a_huge_step_gives_the_cap_instead_of_overflowing() -> None:
    assert compute_backoff(10_000, base_s=1.0, max_s=30.0) == 30.0
    assert compute_backoff(10_000, base_s=1.0, max_s=30.0, jitter=Jitter.FULL, rand=lambda: 0.5) == 15.0


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 0.0), (0.5, 2.0), (0.999, 3.996)])
def test_full_jitter_draws_from_zero_to_the_capped_pause(rand: float, expected: float) -> None:
    pause = compute_backoff(3, base_s=1.0, max_s=8.0, jitter=Jitter.FULL, rand=lambda: rand)
    assert pause == pytest.approx(expected)


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 6.0), (0.5, 8.0), (0.999, 9.996)])
def test_spread_jitter_stays_within_a_quarter_of_the_capped_pause(rand: float, expected: float) -> None:
    pause = compute_backoff(9, base_s=1.0, max_s=8.0, jitter=Jitter.SPREAD, rand=lambda: rand)
    assert pause == pytest.approx(expected)


def test_no_jitter_never_asks_for_a_random_number() -> None:
    def no_rand() -> float:
        raise AssertionError("Jitter.NONE drew a random number")

    assert compute_backoff(2, base_s=1.5, max_s=60.0, rand=no_rand) == 3.0


def test_the_default_random_source_keeps_each_jitter_in_its_range() -> None:
    for _ in range(200):
        assert 0.0 <= compute_backoff(2, base_s=1.0, max_s=9.0, jitter=Jitter.FULL) < 2.0
        assert 1.5 <= compute_backoff(2, base_s=1.0, max_s=9.0, jitter=Jitter.SPREAD) < 2.5


def test_each_caller_keeps_its_own_base_cap_and_jitter() -> None:
    """The same step gives four different pauses: the shared function does not flatten the callers."""
    restart = BackoffPolicy(
        base_s=1.0, max_s=60.0, max_quick_failures=9, min_uptime_s=5.0, cooloff_s=300.0, rand=lambda: 0.0
    )
    task = RetryPolicy(max_attempts=5, base_s=1.0, max_s=60.0, rng=lambda: 0.5)
    call = Retrier(attempts=5, base_s=1.0, max_s=60.0, rng=lambda: 0.25)
    # The supervisor restarts at once after the first quick failure, so its count 3 is the 2nd pause.
    assert [restart.delay(count) for count in (2, 3, 4)] == [0.75, 1.5, 3.0]
    assert [task.delay(failures) for failures in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert [call.delay(failures, None) for failures in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert call.delay(2, retry_after=7.0) == 7.0  # the server's Retry-After wins over the formula


class _NeverStop:
    graceful = False
    fast = False


def test_bootstrap_waits_double_each_time_up_to_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attempt fails: the pauses between them are WORKER_BOOTSTRAP_BACKOFF_S doubling, no jitter."""
    pauses: list[float] = []

    def refuse(*args: object) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(bootstrap_module, "_connect", refuse)
    monkeypatch.setattr(bootstrap_module, "_wait", lambda seconds, progress, stop: pauses.append(seconds))
    table = StatusTable.create(1)
    try:
        outcome = bootstrap_module.bootstrap(
            settings=Settings(worker_bootstrap_attempts=8, worker_bootstrap_backoff_s=2.0),
            progress=table.writer(0),
            stop=_NeverStop(),
            worker_id="test:0:1",
            group_instance_id=None,
        )
        assert table.read(0).bootstrap_failures == 8
    finally:
        table.close()
    assert outcome == exit_codes.BOOT_FAILED
    assert pauses == [2.0, 4.0, 8.0, 16.0, bootstrap_module.BACKOFF_MAX_S, 30.0, 30.0]
