"""Attempts and pauses of a task's transient failures.

Settings: TASK_MAX_ATTEMPTS, TASK_RETRY_BACKOFF_S, TASK_RETRY_BACKOFF_MAX_S.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from llm_service.backoff import Jitter, compute_backoff


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and pauses for transient failures: exponential backoff with full jitter."""

    max_attempts: int
    base_s: float
    max_s: float
    rng: Callable[[], float] = field(default=random.random)

    def delay(self, failures: int) -> float:
        """The pause after the ``failures``-th transient failure of a task."""
        return compute_backoff(
            failures, base_s=self.base_s, max_s=self.max_s, jitter=Jitter.FULL, rand=self.rng
        )
