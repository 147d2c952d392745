"""Retries with exponential backoff and full jitter, bounded by an attempt count and a deadline.

Shared by the OAuth token fetch (auth.py) and the API calls (client.py). Called from task threads;
a Retrier holds no mutable state, so one instance serves every thread of a worker process.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from llm_service.backoff import Jitter, compute_backoff
from llm_service.config import Settings
from llm_service.errors import TransientTaskError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryableFailure:
    """One failed attempt that a later attempt may fix (429, 5xx, timeout, connection error).

    ``retry_after`` is the server's Retry-After in seconds, when it sent one.
    """

    error: TransientTaskError
    retry_after: float | None = None


class Retrier:
    """Runs one attempt function until it returns a result, raises, or the retry budget is spent.

    The attempt returns a result, returns a :class:`RetryableFailure`, or raises a TaskError that
    no retry can fix (those propagate untouched). The Retrier never sleeps past the deadline: when
    the next delay would end at or after it, it gives up at once with the last transient error.
    """

    def __init__(
        self,
        *,
        attempts: int,
        base_s: float,
        max_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._attempts = attempts
        self._base_s = base_s
        self._max_s = max_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> Retrier:
        """The retry budget of one GigaChat call (GIGACHAT_CALL_ATTEMPTS, GIGACHAT_BACKOFF_*)."""
        return cls(
            attempts=settings.gigachat_call_attempts,
            base_s=settings.gigachat_backoff_base_s,
            max_s=settings.gigachat_backoff_max_s,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )

    def delay(self, failures: int, retry_after: float | None) -> float:
        """The pause after the ``failures``-th failure: Retry-After if given, else full jitter.

        Full jitter (a uniform draw from [0, cap]) spreads the retries of many threads and
        processes that failed together, so they do not hit a recovering server in one burst.
        """
        if retry_after is not None:
            return retry_after
        return compute_backoff(
            failures, base_s=self._base_s, max_s=self._max_s, jitter=Jitter.FULL, rand=self._rng
        )

    def run(
        self, attempt: Callable[[], T | RetryableFailure], *, deadline: float, what: str, task_id: str
    ) -> T:
        """Call ``attempt`` until it succeeds; raise TransientTaskError when retries are exhausted."""
        failures = 0
        while True:
            outcome = attempt()
            if not isinstance(outcome, RetryableFailure):
                return outcome
            failures += 1
            error = outcome.error
            if failures >= self._attempts:
                raise TransientTaskError(f"{what} failed after {failures} attempts: {error}", code=error.code)
            pause = self.delay(failures, outcome.retry_after)
            if self._clock() + pause >= deadline:
                raise TransientTaskError(
                    f"{what} failed and the deadline leaves no room for a retry: {error}", code=error.code
                )
            log.info("%s for task %s failed (%s); retry %d in %.2fs", what, task_id, error, failures, pause)
            self._sleep(pause)
