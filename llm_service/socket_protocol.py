"""The status socket's protocol: one JSON request per line, one JSON reply per line (docs/reference.md).

Shared by the supervisor (server side, supervisor/control_socket.py) and ``llmctl`` (client side,
llmctl/control.py); pure functions, no I/O. It lives in the shared package so the client imports
nothing of the server. Also the health a reply reports and the exit code ``llmctl health`` gives it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llm_service.errors import LlmServiceError

COMMANDS = ("status", "health", "reload", "scale", "drain", "resume")
MAX_LINE = 64 * 1024

# The "health" field of the status and health replies (supervisor/health.py derives it from alerts).
OK, DEGRADED, FAILING = "ok", "degraded", "failing"
HEALTH_EXIT_CODES = {OK: 0, DEGRADED: 1, FAILING: 2}  # ``llmctl health``'s exit code for each


class ProtocolError(LlmServiceError):
    """A request the supervisor cannot understand; answered with ``{"ok": false, "error": ...}``."""


@dataclass(frozen=True, kw_only=True)
class Request:
    cmd: str
    n: int | None = None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_request(line: bytes) -> Request:
    """Parse one request line; raise ProtocolError, and only that, for anything else than a request.

    ``json.loads`` raises more than JSONDecodeError on hostile input: UnicodeDecodeError (bytes that
    are not UTF-8), ValueError (an integer of more than 4300 digits), RecursionError (``[[[[...``
    nested deeper than the interpreter's stack). NaN and Infinity are not JSON and are refused.
    """
    try:
        data = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise ProtocolError(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cmd"), str):
        raise ProtocolError('a request is a JSON object with a "cmd" string')
    cmd = data["cmd"]
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown cmd {cmd[:40]!r}; one of {', '.join(COMMANDS)}")
    if cmd != "scale":
        return Request(cmd=cmd)
    n = data.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ProtocolError('scale needs "n", a whole number of workers >= 0')
    return Request(cmd=cmd, n=n)


def encode_request(cmd: str, **args: Any) -> bytes:
    return json.dumps({"cmd": cmd, **args}).encode() + b"\n"


def encode_reply(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":"), default=str, allow_nan=False).encode() + b"\n"


def error_reply(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}
