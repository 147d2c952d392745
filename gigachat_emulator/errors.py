"""All exceptions raised inside the emulator.

Endpoint code raises these; the dispatcher in ``app.py`` is the one place that turns them into HTTP answers.
"""

from __future__ import annotations


class EmulatorError(Exception):
    """Base class of every emulator exception."""


class ApiError(EmulatorError):
    """An ``/api/v1`` error, answered as ``{"status": <int>, "message": <str>}``."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class OAuthError(EmulatorError):
    """An ``/api/v2/oauth`` error, answered as ``{"code": <int>, "message": <str>}`` (fact sheet §1)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{status} code={code} {message}")
        self.status = status
        self.code = code
        self.message = message


class ConfigError(EmulatorError):
    """A setting has a value it cannot take; the message names the setting and the value."""
