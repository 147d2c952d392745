"""The GigaChat access token: fetched from OAuth, cached per process, refreshed ahead of expiry.

Who calls it: GigaChatClient, from every task thread of one worker process, before each API call.
One TokenProvider per process (created in the worker after the fork, with the client's session).

Refresh is single-flight: while a token is still usable but close to expiry, one thread refreshes
and the others keep using the current token; only when there is no usable token do callers wait,
on one lock, for the one refresh in progress (double-checked, so N waiting threads cause one
OAuth call). This matters because OAuth allows about 10 requests per second per key and bursts
of parallel refreshes are known to get 429.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import requests

from llm_service.config import Settings
from llm_service.errors import PermanentTaskError, TaskError, TransientTaskError
from llm_worker.gigachat import wire
from llm_worker.gigachat.backoff import Retrier, RetryableFailure
from llm_worker.gigachat.models import AUTH_FAILED, AUTH_UNAVAILABLE
from llm_worker.gigachat.wire import (
    describe_exception,
    json_body,
    parse_retry_after,
    scrub,
    server_message,
    tls_verify,
)

log = logging.getLogger(__name__)

# GigaChat tokens live 30 minutes; used when a 200 carries no expires_at.
DEFAULT_LIFETIME_S = 30 * 60.0
# Refresh ahead when less than max(60 s, 10 %) of the lifetime remains, but never more than 20 %
# ahead: with the emulator's 2-5 s test lifetimes 60 s would mean refreshing on every call.
REFRESH_AHEAD_MIN_S = 60.0
REFRESH_AHEAD_SHARE = 0.1
REFRESH_AHEAD_MAX_SHARE = 0.2
# Stop using a token this long before it expires: it must survive the request it rides on.
EXPIRY_SAFETY_S = 5.0
EXPIRY_SAFETY_SHARE = 0.1


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # monotonic; from here one caller refreshes while others still use ``value``
    usable_until: float  # monotonic; from here callers wait for a new token


def refresh_margin(lifetime_s: float) -> float:
    """Seconds before expiry at which a token of this lifetime is refreshed ahead."""
    ahead = max(REFRESH_AHEAD_MIN_S, REFRESH_AHEAD_SHARE * lifetime_s)
    return min(ahead, REFRESH_AHEAD_MAX_SHARE * lifetime_s)


class TokenProvider:
    """Process-wide cache of one GigaChat access token; thread-safe.

    ``get`` returns a usable token or raises: PermanentTaskError(code AUTH_FAILED) when OAuth
    rejects the key (400/401/other 4xx), TransientTaskError(code AUTH_UNAVAILABLE) when OAuth stays
    unreachable (429, 5xx, transport errors) until the retries or the deadline run out.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        session: requests.Session,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._url = settings.gigachat_auth_url
        self._key = settings.gigachat_auth_key
        self._scope = settings.gigachat_scope
        self._timeout_s = settings.gigachat_timeout_s
        self._verify = tls_verify(settings)
        self._proxies = wire.environment_proxies(self._url)
        self._session = session
        self._clock = clock
        self._wall_clock = wall_clock
        self._retrier = Retrier.from_settings(settings, clock=clock, sleep=sleep, rng=rng)
        self._lock = threading.Lock()
        # Replaced whole (never mutated), so readers outside the lock see an old or a new token.
        self._cached: _Token | None = None

    def get(self, *, deadline: float, task_id: str = "-") -> str:
        """A token to put in ``Authorization: Bearer``; fetches or refreshes it when needed."""
        cached = self._cached
        now = self._clock()
        if cached is not None and now < cached.refresh_at:
            return cached.value
        if cached is not None and now < cached.usable_until:
            return self._refresh_ahead(cached, deadline, task_id)
        return self._refresh_waiting(deadline, task_id)

    def invalidate(self, token: str) -> None:
        """Forget ``token`` after the API answered 401 to it, unless a newer one already replaced it."""
        with self._lock:
            if self._cached is not None and self._cached.value == token:
                self._cached = None

    def _refresh_ahead(self, cached: _Token, deadline: float, task_id: str) -> str:
        # The current token is still good: if another thread is already refreshing, don't wait.
        if not self._lock.acquire(blocking=False):
            return cached.value
        try:
            return self._refresh_locked(deadline, task_id)
        except TaskError as exc:
            log.warning(
                "Refreshing the GigaChat token ahead of expiry failed, using the current one: %s", exc
            )
            return cached.value
        finally:
            self._lock.release()

    def _refresh_waiting(self, deadline: float, task_id: str) -> str:
        if not self._lock.acquire(timeout=max(0.0, deadline - self._clock())):
            raise TransientTaskError(
                "timed out waiting for the GigaChat token refresh", code=AUTH_UNAVAILABLE
            )
        try:
            return self._refresh_locked(deadline, task_id)
        finally:
            self._lock.release()

    def _refresh_locked(self, deadline: float, task_id: str) -> str:
        # Double-check: whoever held the lock before us may have refreshed already.
        cached = self._cached
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        if not self._key:
            raise PermanentTaskError("GIGACHAT_AUTH_KEY is not set", code=AUTH_FAILED)
        token = self._retrier.run(
            lambda: self._attempt(deadline), deadline=deadline, what="GigaChat OAuth", task_id=task_id
        )
        self._cached = token
        return token.value

    def _attempt(self, deadline: float) -> _Token | RetryableFailure:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise TransientTaskError("no time left to fetch a GigaChat token", code=AUTH_UNAVAILABLE)
        headers = {
            "Authorization": f"Basic {self._key}",
            "RqUID": str(uuid.uuid4()),  # required, and unique per request
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        try:
            response = self._session.post(
                self._url,
                headers=headers,
                data={"scope": self._scope},
                timeout=min(self._timeout_s, remaining),
                verify=self._verify,
                proxies=self._proxies,
            )
        except requests.RequestException as exc:
            error = TransientTaskError(
                f"GigaChat OAuth unreachable: {describe_exception(exc)}", code=AUTH_UNAVAILABLE
            )
            return RetryableFailure(error)
        return self._judge(response)

    def _judge(self, response: requests.Response) -> _Token | RetryableFailure:
        status = response.status_code
        message = scrub(server_message(response), self._key)
        if status == 200:
            return self._parse(response)
        if status == 429 or status >= 500:
            error = TransientTaskError(
                f"GigaChat OAuth answered HTTP {status} {message}", code=AUTH_UNAVAILABLE
            )
            return RetryableFailure(error, parse_retry_after(response.headers.get("Retry-After")))
        raise PermanentTaskError(
            f"GigaChat OAuth rejected the authorization key: HTTP {status} {message}", code=AUTH_FAILED
        )

    def _parse(self, response: requests.Response) -> _Token | RetryableFailure:
        body = json_body(response)
        value = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            error = TransientTaskError(
                "GigaChat OAuth answered 200 without access_token", code=AUTH_UNAVAILABLE
            )
            return RetryableFailure(error)
        expires_at = body.get("expires_at") if isinstance(body, dict) else None
        return self._token(value, expires_at)

    def _token(self, value: str, expires_at_ms: object) -> _Token:
        if isinstance(expires_at_ms, int | float) and not isinstance(expires_at_ms, bool):
            # expires_at is wall-clock milliseconds; convert once to our monotonic clock so that a
            # wall-clock step later does not expire (or immortalise) the cached token.
            lifetime = expires_at_ms / 1000.0 - self._wall_clock()
        else:
            lifetime = DEFAULT_LIFETIME_S
        if lifetime <= 1.0:
            # Our clock is ahead of OAuth's by more than the lifetime: use the token once anyway;
            # a 401 will make us fetch another.
            log.warning("GigaChat token expires in %.1fs by the local clock; is the clock skewed?", lifetime)
            lifetime = 1.0
        now = self._clock()
        log.debug("GigaChat access token obtained, valid for %.1fs", lifetime)
        return _Token(
            value=value,
            refresh_at=now + lifetime - refresh_margin(lifetime),
            usable_until=now + lifetime - min(EXPIRY_SAFETY_S, EXPIRY_SAFETY_SHARE * lifetime),
        )
