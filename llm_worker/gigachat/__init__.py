"""The GigaChat client of a worker process: tokens, HTTP calls with retries, breaker, host-wide limiter.

Build all three in the worker child after the fork, once per process::

    limiter = ConcurrencyLimiter.from_settings(settings)
    breaker = ModelBreaker.from_settings(settings)
    client = GigaChatClient(settings=settings, limiter=limiter, breaker=breaker)
    client.check()  # bootstrap probe

See docs/gigachat-client.md.
"""

from __future__ import annotations

from llm_worker.gigachat.breaker import ModelBreaker
from llm_worker.gigachat.client import GigaChatClient
from llm_worker.gigachat.limiter import ConcurrencyLimiter, Permit
from llm_worker.gigachat.models import AUTH_FAILED, ChatResult

__all__ = ["AUTH_FAILED", "ChatResult", "ConcurrencyLimiter", "GigaChatClient", "ModelBreaker", "Permit"]
