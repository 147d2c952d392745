from __future__ import annotations

import signal

from llm_service import exit_codes
from supervisor.backoff import BackoffPolicy, ExitInfo, Verdict
from tests.supervisor.fakes import wait_status

POLICY = BackoffPolicy(
    base_s=1.0, max_s=8.0, max_quick_failures=5, min_uptime_s=5.0, cooloff_s=300.0, rand=lambda: 0.5
)


def info(code: int | None = None, sig: int | None = None) -> ExitInfo:
    return ExitInfo.from_status(wait_status(code=code, sig=sig))


def test_exit_info_tells_boot_failure_from_crash() -> None:
    assert info(exit_codes.BOOT_FAILED).boot_failure
    assert info(exit_codes.CONFIG_ERROR).config_error
    assert not info(exit_codes.CRASHED).boot_failure
    killed = info(sig=signal.SIGKILL)
    assert killed.signal == signal.SIGKILL and killed.describe() == "killed by SIGKILL"
    assert "could not boot" in info(exit_codes.BOOT_FAILED).describe()


def test_death_after_a_good_run_restarts_at_once_and_resets_the_count() -> None:
    d = POLICY.decide(info=info(sig=signal.SIGKILL), uptime=60, reached_running=True, quick_failures=3)
    assert (d.verdict, d.delay, d.quick_failures) == (Verdict.RESTART, 0.0, 0)


def test_first_quick_failure_restarts_at_once_then_backoff_doubles_then_fatal() -> None:
    count, delays = 0, []
    verdicts = []
    for _ in range(5):
        d = POLICY.decide(
            info=info(exit_codes.BOOT_FAILED), uptime=0.5, reached_running=False, quick_failures=count
        )
        count = d.quick_failures
        verdicts.append(d.verdict)
        delays.append(d.delay)
    assert verdicts == [Verdict.RESTART, Verdict.BACKOFF, Verdict.BACKOFF, Verdict.BACKOFF, Verdict.FATAL]
    assert delays[:4] == [0.0, 1.0, 2.0, 4.0]  # rand 0.5 means no jitter
    assert delays[4] == 300.0


def test_backoff_is_capped_and_jittered() -> None:
    low = BackoffPolicy(
        base_s=1, max_s=8, max_quick_failures=99, min_uptime_s=5, cooloff_s=1, rand=lambda: 0.0
    )
    high = BackoffPolicy(
        base_s=1, max_s=8, max_quick_failures=99, min_uptime_s=5, cooloff_s=1, rand=lambda: 0.999
    )
    assert low.delay(20) == 8 * 0.75
    assert 8 * 1.24 < high.delay(20) <= 8 * 1.25


def test_config_error_goes_fatal_at_once() -> None:
    d = POLICY.decide(info=info(exit_codes.CONFIG_ERROR), uptime=0.1, reached_running=False, quick_failures=0)
    assert d.verdict is Verdict.FATAL


def test_crash_soon_after_running_counts_as_quick() -> None:
    d = POLICY.decide(info=info(exit_codes.CRASHED), uptime=1.0, reached_running=True, quick_failures=1)
    assert d.verdict is Verdict.BACKOFF and d.quick_failures == 2
