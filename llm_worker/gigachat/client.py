"""HTTP calls to the GigaChat REST API: chat completions and the files API, with retries.

Who calls it: the worker pipeline, from its task threads (one GigaChatClient per worker process,
created after the fork, shared by all task threads). ``check`` is the bootstrap probe the worker runs
before it starts consuming.

A chat call first checks the input against the model's context (context.py: INPUT_TOO_LONG without a
billed call), then runs on the task's model and, when that model is rate-limited or down past the
retry budget or its breaker is open, on the next model of its GIGACHAT_FALLBACK_MODELS chain.

Each attempt of a model call: access token (auth.py) -> the model's circuit breaker (breaker.py) ->
host-wide call slot (limiter.py) -> one HTTP request. Around it, retries with backoff on 429, 5xx,
timeouts and transport errors within the task's deadline (backoff.py), and one immediate retry with
a fresh token after a 401. Every request carries the task id as X-Request-ID and X-Session-ID.

Errors raised (all from llm_service.errors; codes in models.py):
PaymentRequiredError for a 402 or 403 (the account's money or rights: the pool pauses, the task
waits); PermanentTaskError for another 4xx than 401/408/429 and for AUTH_FAILED; TransientTaskError when
retries or time run out; BreakerOpenError (transient, code BREAKER_OPEN) when the breaker refuses a
call before anything was sent. No message contains the authorization key or a token.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from llm_service.config import Settings
from llm_service.errors import (
    BreakerOpenError,
    PaymentRequiredError,
    PermanentTaskError,
    ProbeFailedError,
    TransientTaskError,
)
from llm_service.model_settings import parse_context_lengths, parse_fallback_models
from llm_worker.gigachat.auth import TokenProvider
from llm_worker.gigachat.backoff import Retrier, RetryableFailure
from llm_worker.gigachat.breaker import FILES_API, BreakerSet
from llm_worker.gigachat.budget import CallBudget
from llm_worker.gigachat.context import ContextGuard
from llm_worker.gigachat.limiter import ConcurrencyLimiter, Permit
from llm_worker.gigachat.models import (
    AUTH_FAILED,
    FALLBACK_CODES,
    INPUT_TOO_LONG,
    MODEL_BAD_RESPONSE,
    MODEL_NOT_FOUND,
    MODEL_RATE_LIMITED,
    MODEL_REJECTED,
    MODEL_TIMEOUT,
    MODEL_UNAVAILABLE,
    PERMANENT_BY_STATUS,
    ChatResult,
)
from llm_worker.gigachat.wire import (
    NOT_JSON,
    describe_exception,
    environment_proxies,
    json_body,
    parse_retry_after,
    scrub,
    server_message,
    tls_verify,
)
from llm_worker.json_numbers import finite_number

log = logging.getLogger(__name__)

USER_AGENT = "llm-service"
# Connections beyond the task threads: the OAuth refresh and the bootstrap probe.
_EXTRA_CONNECTIONS = 2


@dataclass(frozen=True)
class _Request:
    """One API request, re-sendable as is on every attempt."""

    method: str
    path: str
    what: str  # names the operation in errors and logs
    body: bytes | None = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    form: Mapping[str, str] | None = None
    gated: bool = True  # goes through the breaker and the limiter (model work; not the probe)
    breaker: str = FILES_API  # whose breaker: the model's for a chat call


def make_session(factory: Callable[[], requests.Session], settings: Settings) -> requests.Session:
    """A Session whose connection pool fits every task thread of the process at once.

    urllib3 would otherwise keep only 10 connections per host and open (and drop) extra ones on
    each burst. Retries are ours, so the adapter does none. A Session is shared between threads
    here: its pool is thread-safe, and GigaChat sets no cookies we would race on. The session does not
    read the environment per request: the proxies and the CA bundle it would find there are resolved
    once (wire.py), and a ~/.netrc login would replace our Authorization header.
    """
    session = factory()
    session.trust_env = False
    size = max(settings.worker_max_concurrent_tasks, settings.gigachat_max_concurrency) + _EXTRA_CONNECTIONS
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


class GigaChatClient:
    """The GigaChat API for one worker process; thread-safe."""

    def __init__(
        self,
        *,
        settings: Settings,
        limiter: ConcurrencyLimiter,
        breakers: BreakerSet,
        session_factory: Callable[[], requests.Session] = requests.Session,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._api_url = settings.gigachat_api_url.rstrip("/")
        self._auth_key = settings.gigachat_auth_key
        self._timeout_s = settings.gigachat_timeout_s
        self._verify = tls_verify(settings)
        self._proxies = environment_proxies(self._api_url)
        self._limiter = limiter
        self._breakers = breakers
        self._fallbacks = parse_fallback_models(settings.gigachat_fallback_models)
        self._context = ContextGuard(lengths=parse_context_lengths(settings.gigachat_context_lengths))
        self._clock = clock
        self._session = make_session(session_factory, settings)
        self._tokens = TokenProvider(
            settings=settings, session=self._session, clock=clock, wall_clock=wall_clock, sleep=sleep, rng=rng
        )
        self._retrier = Retrier.from_settings(settings, clock=clock, sleep=sleep, rng=rng)

    @property
    def tokens(self) -> TokenProvider:
        return self._tokens

    def chat(
        self,
        *,
        task_id: str,
        messages: list[dict[str, Any]],
        model: str,
        params: Mapping[str, Any],
        deadline: float,
        fallback: bool = True,
        budget: CallBudget | None = None,
    ) -> ChatResult:
        """One non-streaming chat completion. ``params`` (temperature, max_tokens, ...) go in as given.

        With ``fallback`` the models of ``model``'s chain are tried in turn (see the module docstring);
        the result's ``model`` says which one answered. When every model failed, the first model's
        real failure is raised (it counts as an attempt), or BreakerOpenError when none was called.
        Each HTTP request sent (retries included, on any model) takes one call from ``budget``; with none
        left the call fails with the last transient error.
        """
        chain = self.chain(model) if fallback else (model,)
        first_failure: TransientTaskError | None = None
        for index, name in enumerate(chain):
            try:
                return self._chat_on(task_id, messages, name, params, deadline, budget=budget)
            except BreakerOpenError as exc:
                failure: TransientTaskError = exc
            except TransientTaskError as exc:
                if exc.code not in FALLBACK_CODES:
                    raise
                failure = exc
                first_failure = first_failure or exc
            if index + 1 < len(chain):
                log.warning(
                    "Task %s: model %s failed (%s); falling back to %s",
                    task_id,
                    name,
                    failure.code,
                    chain[index + 1],
                )
        raise first_failure or failure

    def chain(self, model: str) -> tuple[str, ...]:
        """The task's model followed by its fallbacks (GIGACHAT_FALLBACK_MODELS)."""
        return (model, *self._fallbacks.get(model, ()))

    def _chat_on(
        self,
        task_id: str,
        messages: list[dict[str, Any]],
        model: str,
        params: Mapping[str, Any],
        deadline: float,
        *,
        budget: CallBudget | None,
    ) -> ChatResult:
        count = functools.partial(self._count_tokens, task_id, model, deadline)
        self._context.check(model, messages, count=count)
        body = {**params, "model": model, "messages": messages, "stream": False}
        request = _Request(
            "POST", "/chat/completions", "GigaChat chat", body=_json_bytes(body), breaker=model
        )
        response = self._call(request, task_id=task_id, deadline=deadline, budget=budget)
        return ChatResult.from_response(_decode(response, request), requested_model=model)

    def _count_tokens(self, task_id: str, model: str, deadline: float, texts: list[str]) -> list[int]:
        """``POST /tokens/count``: tokens per text. Not gated: it is no generation and is not billed."""
        body = _json_bytes({"model": model, "input": texts})
        request = _Request("POST", "/tokens/count", "GigaChat token count", body=body, gated=False)
        answer = _decode(self._call(request, task_id=task_id, deadline=deadline), request)
        items = answer if isinstance(answer, list) else []
        counts = [item.get("tokens") if isinstance(item, dict) else None for item in items]
        if len(counts) != len(texts) or not all(_is_count(c) for c in counts):
            raise TransientTaskError(
                "GigaChat token count answered an unexpected body", code=MODEL_BAD_RESPONSE
            )
        return [int(c) for c in counts if c is not None]

    def upload_file(
        self, *, task_id: str, filename: str, data: bytes, content_type: str, deadline: float
    ) -> str:
        """Upload a document for ``attachments``; returns the file id GigaChat assigned."""
        request = _Request(
            "POST",
            "/files",
            "GigaChat file upload",
            files={"file": (filename, data, content_type)},
            form={"purpose": "general"},
        )
        body = _decode(self._call(request, task_id=task_id, deadline=deadline), request)
        file_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(file_id, str) or not file_id:
            raise TransientTaskError(
                "GigaChat file upload answered without a file id", code=MODEL_BAD_RESPONSE
            )
        return file_id

    def delete_file(self, *, task_id: str, file_id: str) -> None:
        """Delete an uploaded file (``POST /files/{id}/delete``); a file already gone is fine.

        Bounded by GIGACHAT_TIMEOUT_S rather than the task deadline: cleanup also runs after a task
        failed on its deadline.
        """
        request = _Request("POST", f"/files/{quote(file_id, safe='')}/delete", "GigaChat file delete")
        try:
            self._call(request, task_id=task_id, deadline=self._clock() + self._timeout_s)
        except PermanentTaskError as exc:
            if exc.code != MODEL_NOT_FOUND:
                raise

    def check(self) -> None:
        """Bootstrap probe: get a token and list the models. Raises the TaskError of the first failure.

        Bypasses the breaker and the limiter: it must work while they are closed for model calls, and
        the model list does not use a generation stream.
        """
        request = _Request("GET", "/models", "GigaChat model list", gated=False)
        self._call(request, task_id="bootstrap", deadline=self._clock() + self._timeout_s)

    def balance(self) -> dict[str, float] | None:
        """GET /balance: tokens left per prepaid package; None when the account has none (403).

        Like ``check``, bypasses the breaker and the limiter: it sends no generation.
        """
        request = _Request("GET", "/balance", "GigaChat balance", gated=False)
        try:
            response = self._call(request, task_id="balance", deadline=self._clock() + self._timeout_s)
        except PaymentRequiredError as exc:
            if exc.status == 403:  # pay-as-you-go: no packages to read
                return None
            raise
        body = _decode(response, request)
        entries = body.get("balance") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise TransientTaskError("GigaChat balance answered without a list", code=MODEL_BAD_RESPONSE)
        return {
            str(e["usage"]): value
            for e in entries
            if isinstance(e, dict) and "usage" in e and (value := finite_number(e.get("value"))) is not None
        }

    def close(self) -> None:
        """Close the pooled connections. The limiter and breakers are the caller's to close."""
        self._session.close()

    def _call(
        self, request: _Request, *, task_id: str, deadline: float, budget: CallBudget | None = None
    ) -> requests.Response:
        failures: list[RetryableFailure] = []

        def attempt() -> requests.Response | RetryableFailure:
            if budget is not None and not budget.take():
                raise _budget_spent(request, budget, failures)
            try:
                outcome = self._attempt_with_reauth(request, task_id, deadline)
            except BreakerOpenError:
                if budget is not None:
                    budget.give_back()
                if not failures:
                    raise
                # This call did reach the server and failed: report that (it counts as an attempt
                # at the task), not "breaker open" (which does not). Otherwise a task whose prompt
                # itself makes the server fail would be retried forever without ever being counted.
                last = failures[-1].error
                raise TransientTaskError(
                    f"{request.what} failed, then the circuit breaker opened: {last}", code=last.code
                ) from None
            if isinstance(outcome, RetryableFailure):
                if request.gated and self._breakers.get(request.breaker).probe_failed():
                    # The breaker is open again; the next attempt would only be refused. Say so in a
                    # way that costs the task an attempt (see ProbeFailedError).
                    raise ProbeFailedError(
                        f"{request.what} failed as the circuit breaker's probe: {outcome.error}",
                        code=outcome.error.code,
                    )
                failures.append(outcome)
            return outcome

        return self._retrier.run(attempt, deadline=deadline, what=request.what, task_id=task_id)

    def _attempt_with_reauth(
        self, request: _Request, task_id: str, deadline: float
    ) -> requests.Response | RetryableFailure:
        """One attempt; after a 401 (token revoked or expired early) one more with a new token."""
        token = self._tokens.get(deadline=deadline, task_id=task_id)
        outcome = self._attempt(request, task_id, token, deadline)
        if _unauthorized(outcome):
            log.info("GigaChat answered 401 for task %s; retrying once with a new token", task_id)
            self._tokens.invalidate(token)
            token = self._tokens.get(deadline=deadline, task_id=task_id)
            outcome = self._attempt(request, task_id, token, deadline)
            if _unauthorized(outcome):
                raise PermanentTaskError(
                    f"{request.what}: GigaChat rejected a new access token (HTTP 401)", code=AUTH_FAILED
                )
        if isinstance(outcome, RetryableFailure):
            return outcome
        return self._judge(request, outcome, token)

    def _attempt(
        self, request: _Request, task_id: str, token: str, deadline: float
    ) -> requests.Response | RetryableFailure:
        send = functools.partial(self._send, request, task_id, token, deadline)
        try:
            return self._breakers.get(request.breaker).call(send) if request.gated else send()
        except requests.HTTPError as exc:  # a 5xx, raised by _send so that the breaker counts it
            return self._server_error(request, exc.response, token)
        except requests.Timeout as exc:
            error = TransientTaskError(
                f"{request.what} timed out: {describe_exception(exc)}", code=MODEL_TIMEOUT
            )
            return RetryableFailure(error)
        except requests.RequestException as exc:
            error = TransientTaskError(
                f"{request.what} failed: {describe_exception(exc)}", code=MODEL_UNAVAILABLE
            )
            return RetryableFailure(error)

    def _send(self, request: _Request, task_id: str, token: str, deadline: float) -> requests.Response:
        if request.gated:
            with self._limiter.acquire(deadline) as permit:
                response = self._http(request, task_id, token, deadline)
                self._report(response.status_code, permit)
        else:
            response = self._http(request, task_id, token, deadline)
        if response.status_code >= 500:
            raise requests.HTTPError(f"HTTP {response.status_code}", response=response)
        return response

    def _http(self, request: _Request, task_id: str, token: str, deadline: float) -> requests.Response:
        return self._session.request(
            request.method,
            self._api_url + request.path,
            headers=self._headers(request, task_id, token),
            data=request.body if request.files is None else request.form,
            files=request.files,
            timeout=self._timeout(request, deadline),
            verify=self._verify,
            proxies=self._proxies,
        )

    def _headers(self, request: _Request, task_id: str, token: str) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {token}",
            # GigaChat logs these; the emulator counts calls per request id to catch duplicates.
            "X-Request-ID": task_id,
            "X-Session-ID": task_id,
            "Accept": "application/json",
        }
        if request.body is not None:
            headers["Content-Type"] = "application/json"
        return headers

    def _timeout(self, request: _Request, deadline: float) -> float:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise TransientTaskError(
                f"{request.what}: the task deadline passed before the call", code=MODEL_TIMEOUT
            )
        return min(self._timeout_s, remaining)

    def _report(self, status: int, permit: Permit) -> None:
        if status == 429:
            self._limiter.on_rate_limited(sent_at=permit.acquired_at)
        elif 200 <= status < 300:
            self._limiter.on_success()

    def _judge(
        self, request: _Request, response: requests.Response, token: str
    ) -> requests.Response | RetryableFailure:
        status = response.status_code
        if 200 <= status < 300:
            return response
        message = scrub(server_message(response), self._auth_key, token)
        if status == 429:
            error = TransientTaskError(f"{request.what}: HTTP 429 {message}", code=MODEL_RATE_LIMITED)
            return RetryableFailure(error, parse_retry_after(response.headers.get("Retry-After")))
        if status == 408:
            return RetryableFailure(
                TransientTaskError(f"{request.what}: HTTP 408 {message}", code=MODEL_TIMEOUT)
            )
        code = PERMANENT_BY_STATUS.get(status, MODEL_REJECTED)
        if status in (402, 403):  # a spent package or lost rights: the pool pauses, the task waits
            raise PaymentRequiredError(
                f"{request.what} refused by GigaChat: HTTP {status} {message}", code=code, status=status
            )
        if status == 413 and request.breaker != FILES_API:
            code = INPUT_TOO_LONG  # a chat prompt over the model's context (GigaChat's 413)
        raise PermanentTaskError(f"{request.what} rejected by GigaChat: HTTP {status} {message}", code=code)

    def _server_error(
        self, request: _Request, response: requests.Response | None, token: str
    ) -> RetryableFailure:
        if response is None:
            return RetryableFailure(
                TransientTaskError(f"{request.what}: server error", code=MODEL_UNAVAILABLE)
            )
        message = scrub(server_message(response), self._auth_key, token)
        error = TransientTaskError(
            f"{request.what}: HTTP {response.status_code} {message}", code=MODEL_UNAVAILABLE
        )
        return RetryableFailure(error, parse_retry_after(response.headers.get("Retry-After")))


def _unauthorized(outcome: requests.Response | RetryableFailure) -> bool:
    return isinstance(outcome, requests.Response) and outcome.status_code == 401


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_bytes(body: Mapping[str, Any]) -> bytes:
    # ensure_ascii=False: Cyrillic as UTF-8, not \\u escapes (smaller, and what GigaChat expects).
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _decode(response: requests.Response, request: _Request) -> Any:
    body = json_body(response)
    if body is NOT_JSON:
        raise TransientTaskError(f"{request.what}: the 2xx body is not JSON", code=MODEL_BAD_RESPONSE)
    return body


def _budget_spent(
    request: _Request, budget: CallBudget, failures: list[RetryableFailure]
) -> TransientTaskError:
    """No model call left for this task delivery: fail with the last transient error, if any."""
    if not failures:
        return TransientTaskError(
            f"{request.what}: TASK_MAX_MODEL_CALLS={budget.limit} model calls spent", code=MODEL_UNAVAILABLE
        )
    last = failures[-1].error
    return TransientTaskError(
        f"{request.what}: TASK_MAX_MODEL_CALLS={budget.limit} model calls spent; last error: {last}",
        code=last.code,
    )
