"""The one exponential backoff of the service: the pause before the n-th retry of anything.

Pure function, no state, safe from any thread or process. Four callers, each with its own base, cap
and jitter (their settings name them): the supervisor's restart of a failing worker
(supervisor/backoff.py, WORKER_RESTART_BACKOFF_*), a worker's bootstrap attempts
(llm_worker/bootstrap.py, WORKER_BOOTSTRAP_BACKOFF_S), a task's transient failures
(llm_worker/retry_policy.py, TASK_RETRY_BACKOFF_*) and one GigaChat call's retries
(llm_worker/gigachat/backoff.py, GIGACHAT_BACKOFF_*).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

# 2.0 ** 1024 overflows a float; long before that every pause is at its cap.
_MAX_EXPONENT = 64


class Jitter(enum.Enum):
    """How much chance moves the capped pause, so processes that failed together do not retry together."""

    NONE = "none"  # exactly the capped pause: one process alone, nothing to spread
    FULL = "full"  # uniform in [0, capped): many threads and processes hitting one recovering server
    SPREAD = "spread"  # within +-25 % of the capped pause: keeps the doubling rhythm an operator reads


def compute_backoff(
    step: int,
    *,
    base_s: float,
    max_s: float,
    jitter: Jitter = Jitter.NONE,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry ``step`` (1 for the first): ``base_s * 2**(step-1)``, capped, jittered.

    ``rand`` returns a float in [0, 1); callers inject it so their tests are deterministic. A step
    below 1 counts as 1.
    """
    exponent = min(max(step - 1, 0), _MAX_EXPONENT)
    capped = min(max_s, base_s * 2.0**exponent)
    if jitter is Jitter.FULL:
        return rand() * capped
    if jitter is Jitter.SPREAD:
        return capped * (0.75 + 0.5 * rand())
    return capped
