"""The GigaChat client of a worker process: tokens, HTTP calls with retries, breaker, host-wide limiter.

Build all three in the worker child after the fork, once per process::

    limiter = ConcurrencyLimiter.from_settings(settings)
    breakers = BreakerSet.from_settings(settings)  # one breaker per model
    client = GigaChatClient(settings=settings, limiter=limiter, breakers=breakers)
    client.check()  # bootstrap probe

See docs/gigachat-client.md.
"""

from __future__ import annotations

from llm_worker.gigachat.breaker import BreakerSet, ModelBreaker
from llm_worker.gigachat.client import GigaChatClient
from llm_worker.gigachat.limiter import ConcurrencyLimiter, Permit
from llm_worker.gigachat.models import AUTH_FAILED, ChatResult

__all__ = [
    "AUTH_FAILED",
    "BreakerSet",
    "ChatResult",
    "ConcurrencyLimiter",
    "GigaChatClient",
    "ModelBreaker",
    "Permit",
]
