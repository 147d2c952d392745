"""``POST /api/v1/chat/completions``: validation, attachments, limits, fault injection and latency.

Order per call: validate the body -> the model's own outage (per_model.py) -> resolve attachments ->
check the context size -> take a concurrency slot -> maybe inject a fault -> wait the configured latency
(per model where set) -> answer (JSON or SSE). The slot is held until the answer is fully written,
including a stream, and is freed by a request cleanup.
"""

from __future__ import annotations

import hashlib
import logging
from http import HTTPStatus
from typing import NoReturn

from gigachat_emulator.auth import Grant
from gigachat_emulator.chat import ChatRequest, complete, completion_json, parse_chat_request, stream_events
from gigachat_emulator.config import FaultConfig
from gigachat_emulator.errors import ApiError
from gigachat_emulator.faults import Fault, FaultKind, OutageMode
from gigachat_emulator.state import EmulatorState
from gigachat_emulator.wire import EVENT_STREAM, Request, Response, json_response

logger = logging.getLogger(__name__)

# The messages the real service uses where documented (sheet §5); the rest are the HTTP reason phrases.
_MESSAGES = {429: "Too many requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def error_message(status: int) -> str:
    """Return the ``message`` used for an error status."""
    if status in _MESSAGES:
        return _MESSAGES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def retry_after_headers(config: FaultConfig, status: int) -> dict[str, str]:
    """``Retry-After`` for 429 answers, only when configured (the real service's use is unconfirmed)."""
    if status != 429 or config.retry_after is None:
        return {}
    return {"Retry-After": f"{config.retry_after:g}"}


def raise_fault(state: EmulatorState, request: Request, config: FaultConfig, fault: Fault) -> NoReturn:
    """Carry out an injected fault: raise its error, or hang first and then raise 504 (503 on shutdown)."""
    request.call.injected = fault.kind.value
    if fault.kind is FaultKind.ERROR:
        headers = retry_after_headers(config, fault.status)
        raise ApiError(fault.status, error_message(fault.status), headers=headers)
    outcome = state.sleeper.hang(config.hang_cap, request.client_gone)
    logger.debug("Hung call to %s ended: %s", request.path, outcome)
    status = 503 if outcome == "stopping" else 504
    raise ApiError(status, error_message(status))


class ChatEndpoint:
    """Answers chat completions for one emulator."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def handle(self, request: Request, grant: Grant) -> Response:
        """Answer one authorised chat call; raises ``ApiError`` for every non-200 answer."""
        chat = parse_chat_request(request.json_body())
        request.call.model = chat.model.id
        config = self._state.config.get().for_model(chat.model.id)
        outage = self._state.model_outages.current(chat.model.id, self._state.clock.now())
        if outage is not None:
            request.call.injected = "outage"
            if outage is OutageMode.RESET:
                return Response(0, reset=True)
            raise ApiError(503, error_message(503))
        attachment_tokens, attachment_digest = self._attachments(chat)
        completion = complete(chat, attachment_tokens=attachment_tokens, attachment_digest=attachment_digest)
        request.call.prompt_tokens = completion.prompt_tokens
        if completion.prompt_tokens > chat.model.context_tokens:
            raise ApiError(413, "Payload too large")
        self._take_slot(request, grant.account, config)
        self._state.billing.admit(chat.model.id)
        fault = self._state.injector.decide(config)
        if fault is not None:
            raise_fault(self._state, request, config, fault)
        # Latency counts from the request's arrival, so time spent queueing for the CPU under load is
        # absorbed instead of added on top.
        answer_at = request.received_at + config.latency
        if not self._state.sleeper.sleep_until(answer_at):
            raise ApiError(503, error_message(503))
        request.call.completion_tokens = completion.completion_tokens
        self._state.billing.charge(chat.model.id, completion.total_tokens)
        created = int(self._state.clock.now())
        if chat.stream:
            events = stream_events(chat, completion, created, per_token_s=config.latency_per_token)
            return Response(200, content_type=EVENT_STREAM, stream=events)
        if not self._state.sleeper.sleep_until(
            answer_at + config.latency_per_token * completion.completion_tokens
        ):
            raise ApiError(503, error_message(503))
        return json_response(200, completion_json(chat, completion, created))

    def _attachments(self, chat: ChatRequest) -> tuple[int, str]:
        """Return the prompt tokens and a content digest of all attached files; 404 for an unknown id."""
        tokens = 0
        digest = hashlib.sha256()
        for file_id in (a for m in chat.messages for a in m.attachments):
            stored = self._state.files.get(file_id)
            if stored is None:
                raise ApiError(404, f"No such file: {file_id}")
            tokens += stored.prompt_tokens()
            digest.update(stored.digest().encode("ascii"))
        return tokens, digest.hexdigest() if tokens else ""

    def _take_slot(self, request: Request, account: str, config: FaultConfig) -> None:
        limiter = self._state.limiter
        if not limiter.try_acquire(account, config.max_concurrency):
            raise ApiError(429, error_message(429), headers=retry_after_headers(config, 429))
        request.cleanups.append(lambda: limiter.release(account))
