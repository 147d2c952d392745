"""Every exception type of llm-service, in one place (docs/architecture.md, "Conventions").

Task errors carry the ``code`` that goes into a FAILED status and the DLQ headers, and say whether
a retry could help. Shutdown control is the only BaseException subclass.
"""

from __future__ import annotations


class LlmServiceError(Exception):
    """Base of the errors this project raises on purpose."""


class ConfigError(LlmServiceError):
    """A setting is missing or invalid. The message names the variable and never shows a secret."""


class StaleRecordError(LlmServiceError):
    """A status-table record could not be read consistently: its writer is stuck or died mid-write."""


class StackError(LlmServiceError):
    """The local development stack could not be provisioned, started or stopped."""


class TaskError(LlmServiceError):
    """A task cannot be completed now. ``code`` is the status event's ``error.code``."""

    code = "INTERNAL"
    transient = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class PermanentTaskError(TaskError):
    """Retrying cannot help: bad message, missing or unreadable input, a 4xx from the model."""


class PaymentRequiredError(TaskError):
    """The model refused for money or rights (HTTP 402 or 403): the account's, not the task's, fault.

    The pipeline holds the task (never fails it) and the pool pauses intake until a probe succeeds
    (llm_worker/spending.py, docs/gigachat-client.md "Budgets and payment").
    """

    code = "MODEL_PAYMENT_REQUIRED"

    def __init__(self, message: str, *, code: str | None = None, status: int = 402) -> None:
        super().__init__(message, code=code)
        self.status = status


class TransientTaskError(TaskError):
    """Retrying may help: 5xx, 429, timeouts, connection errors."""

    code = "TRANSIENT"
    transient = True


class BreakerOpenError(TransientTaskError):
    """The GigaChat circuit breaker refused the call; no request was sent.

    The pipeline retries the task later without counting an attempt.
    """

    code = "BREAKER_OPEN"


class ProbeFailedError(TransientTaskError):
    """The call was the circuit breaker's half-open probe and the server failed it; the breaker is open again.

    Unlike a refusal it counts as an attempt at the task, so a prompt that makes the server fail every
    time (a "bad prompt") uses up its attempts and fails instead of holding the breaker open forever.
    """


class ShutdownRequested(BaseException):
    """Raised inside a worker to unwind on a stop request; never caught by broad handlers."""
