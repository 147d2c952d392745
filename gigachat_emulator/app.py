"""Routing and dispatch: maps a ``Request`` to its handler and turns every outcome into a ``Response``.

This is the boundary where exceptions become answers: ``ApiError`` -> ``{"status","message"}``,
``OAuthError`` -> ``{"code","message"}``, anything unexpected -> logged with traceback and answered 500.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from gigachat_emulator.api import GigaChatApi
from gigachat_emulator.calls import CallRecord
from gigachat_emulator.completions import ChatEndpoint
from gigachat_emulator.control import ControlApi
from gigachat_emulator.errors import ApiError, OAuthError
from gigachat_emulator.faults import OutageMode
from gigachat_emulator.state import EmulatorState
from gigachat_emulator.wire import Request, Response, api_error_response, oauth_error_response

logger = logging.getLogger(__name__)

Handler = Callable[[Request, dict[str, str]], Response]
OAUTH_PATH = "/api/v2/oauth"


@dataclass(frozen=True)
class Route:
    """One endpoint: method, full-match path pattern with named groups, handler."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler


def _route(method: str, pattern: str, handler: Handler) -> Route:
    return Route(method, re.compile(pattern), handler)


class Emulator:
    """The application: routes requests, applies outages, logs calls and tracks in-flight requests."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._in_flight = 0
        self._idle = threading.Condition()
        self._routes = self._build_routes()

    def _build_routes(self) -> tuple[Route, ...]:
        api, control, chat = GigaChatApi(self.state), ControlApi(self.state), ChatEndpoint(self.state)
        file_id = r"(?P<file>[^/]+)"
        return (
            _route("POST", OAUTH_PATH, api.oauth),
            _route("POST", r"/api/v1/chat/completions", lambda r, p: chat.handle(r, api.authorize(r))),
            _route("GET", r"/api/v1/models", api.models),
            _route("GET", r"/api/v1/models/(?P<model>[^/]+)", api.model),
            _route("POST", r"/api/v1/tokens/count", api.tokens_count),
            _route("GET", r"/api/v1/balance", api.balance),
            _route("POST", r"/api/v1/files", api.upload_file),
            _route("GET", r"/api/v1/files", api.list_files),
            _route("GET", rf"/api/v1/files/{file_id}", api.get_file),
            _route("POST", rf"/api/v1/files/{file_id}/delete", api.delete_file),
            _route("GET", rf"/api/v1/files/{file_id}/content", api.file_content),
            _route("GET", r"/_emulator/health", control.health),
            _route("GET", r"/_emulator/config", control.get_config),
            _route("POST", r"/_emulator/config", control.set_config),
            _route("POST", r"/_emulator/outage", control.outage),
            _route("GET", r"/_emulator/billing", control.get_billing),
            _route("POST", r"/_emulator/billing", control.set_billing),
            _route("GET", r"/_emulator/calls", control.calls),
            _route("GET", r"/_emulator/stats", control.stats),
            _route("POST", r"/_emulator/reset", control.reset),
        )

    def dispatch(self, request: Request) -> Response:
        """Answer a request. Never raises except for ``BaseException`` (shutdown)."""
        with self._idle:
            self._in_flight += 1
        response = self._answer(request)
        if request.path.startswith("/api/"):
            response.headers.setdefault("X-Request-Id", request.header("x-request-id") or str(uuid.uuid4()))
            response.headers.setdefault("X-Session-Id", request.header("x-session-id") or str(uuid.uuid4()))
        return response

    def _answer(self, request: Request) -> Response:
        try:
            handler, params = self._find(request)
            outage = self._outage(request)
            return outage if outage is not None else handler(request, params)
        except ApiError as exc:
            return api_error_response(exc)
        except OAuthError as exc:
            return oauth_error_response(exc)
        except Exception:  # the request boundary: one bad request must not kill the server
            logger.exception("Unhandled error answering %s %s", request.method, request.path)
            return api_error_response(ApiError(500, "Internal Server Error"))

    def _find(self, request: Request) -> tuple[Handler, dict[str, str]]:
        allowed: list[str] = []
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method == request.method:
                return route.handler, match.groupdict()
            allowed.append(route.method)
        if allowed:
            raise ApiError(405, "Method Not Allowed", headers={"Allow": ", ".join(sorted(set(allowed)))})
        raise ApiError(404, "Not Found")

    def _outage(self, request: Request) -> Response | None:
        if not request.path.startswith("/api/"):
            return None
        mode = self.state.outage.current(self.state.clock.now())
        if mode is None:
            return None
        request.call.injected = "outage"
        if mode is OutageMode.RESET:
            return Response(0, reset=True)
        return api_error_response(ApiError(503, "Service Unavailable"))

    def finish(self, request: Request, status: int, duration_s: float) -> None:
        """Called by the transport exactly once per dispatched request, just before the last byte of the
        answer is sent (so a client that reacts to the answer already sees the log entry and a free slot),
        or when the answer is abandoned.

        ``status`` is what the client gets: the HTTP status, 499 when it went away mid-answer, 0 for a reset.
        """
        for cleanup in request.cleanups:
            cleanup()
        if request.path.startswith("/api/"):
            request.record = self._record(request, status, duration_s)
            self.state.calls.add(request.record)
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def amend(self, request: Request, status: int) -> None:
        """Correct the logged status after ``finish`` when writing the answer failed."""
        if request.record is not None:
            self.state.calls.set_status(request.record, status)

    def _record(self, request: Request, status: int, duration_s: float) -> CallRecord:
        call = request.call
        return CallRecord(
            ts=round(self.state.clock.now(), 6),
            method=request.method,
            endpoint=request.path,
            status=status,
            request_id=request.header("x-request-id"),
            session_id=request.header("x-session-id"),
            model=call.model,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            injected=call.injected,
            duration_ms=round(duration_s * 1000, 3),
        )

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is being answered; return ``False`` if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._in_flight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
            return True
