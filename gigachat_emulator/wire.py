"""Transport-neutral request and response objects, and the JSON body shapes of GigaChat answers.

``server.py`` builds a ``Request`` from the socket and writes the ``Response``; everything between works on
these plain objects, so endpoint logic never touches sockets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gigachat_emulator.calls import CallRecord
from gigachat_emulator.errors import ApiError, OAuthError

JSON_UTF8 = "application/json; charset=utf-8"
JSON_PLAIN = "application/json"
EVENT_STREAM = "text/event-stream"


@dataclass
class CallInfo:
    """What an endpoint learned about the call, for the call log; filled in while handling."""

    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    injected: str | None = None


@dataclass
class Request:
    """One HTTP request; ``headers`` keys are lower-case.

    ``client_gone`` reports whether the peer has closed the connection (used by hung calls).
    ``received_at`` is the ``time.monotonic()`` at which the request line arrived; latency counts from it.
    ``cleanups`` run just before the last byte of the answer is sent (or when it is abandoned), e.g. to
    free a concurrency slot: a client that sends its next call on receiving the answer must find it free.
    ``record`` is the call-log entry, once logged.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client_gone: Callable[[], bool] = lambda: False
    received_at: float = field(default_factory=time.monotonic)
    call: CallInfo = field(default_factory=CallInfo)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    record: CallRecord | None = None

    def header(self, name: str) -> str | None:
        """Return a header value by case-insensitive name, or ``None``."""
        return self.headers.get(name.lower())

    def json_body(self) -> object:
        """Return the decoded JSON body; raises ``ApiError`` 400 when it is not valid UTF-8 JSON."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"Invalid JSON body: {exc}") from None


@dataclass
class Response:
    """An answer to write.

    With ``stream`` set, the body is sent with chunked transfer encoding as a sequence of
    ``(delay_seconds, bytes)``: the writer waits ``delay_seconds`` before sending each piece.
    With ``reset`` set, no answer is written and the connection is reset instead.
    """

    status: int
    body: bytes = b""
    content_type: str = JSON_UTF8
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[tuple[float, bytes]] | None = None
    reset: bool = False


def encode_json(payload: object) -> bytes:
    """Serialise like the real service: compact separators, UTF-8 text (not ``\\u`` escapes)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(
    status: int, payload: object, *, content_type: str = JSON_UTF8, headers: dict[str, str] | None = None
) -> Response:
    """Return a JSON answer."""
    return Response(status, encode_json(payload), content_type, dict(headers or {}))


def api_error_response(error: ApiError) -> Response:
    """Return the ``{"status", "message"}`` body the ``/api/v1`` endpoints use for errors (sheet §5)."""
    body = {"status": error.status, "message": error.message}
    return json_response(error.status, body, headers=error.headers)


def oauth_error_response(error: OAuthError) -> Response:
    """Return the ``{"code", "message"}`` body the OAuth endpoint uses for errors (sheet §1)."""
    body = {"code": error.code, "message": error.message}
    return json_response(error.status, body, content_type=JSON_PLAIN)
