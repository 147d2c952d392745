"""How many model calls one delivery of a task may still make (TASK_MAX_MODEL_CALLS).

Retries nest: the pipeline retries a task (TASK_MAX_ATTEMPTS) and each attempt's HTTP call is retried
by the client (GIGACHAT_CALL_ATTEMPTS). One budget per delivery, shared by both levels, caps the
product. Used by one task thread only, so it needs no lock.
"""

from __future__ import annotations


class CallBudget:
    """Chat requests a task delivery may still send."""

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        """Count one request about to be sent; False (and nothing counted) when none is left."""
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def give_back(self) -> None:
        """The request counted was not sent after all (the circuit breaker refused it)."""
        self.used = max(0, self.used - 1)

    @property
    def spent(self) -> bool:
        return self.used >= self.limit
